//! placeholder (helper-a writes the real module)
pub fn smtp_password_v4(_secret: &str, _region: &str) -> String {
    String::new()
}
