pub mod config;
pub mod verdict;
