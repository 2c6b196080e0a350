//! placeholder (helper-a writes the real module)
pub fn region_from_host(_host: &str) -> Option<String> {
    None
}
