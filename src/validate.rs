//! Input rules shared by configuration and services: they live below both, so
//! neither depends on the other for them.

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_EMAIL: usize = 254;

/// The 30,000 most common passwords, most common first (zxcvbn's list, MIT; see
/// `data/README.md`), one per line, lower case.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// True when the password, ignoring case, is one of the most common ones. A
/// scan of the bundled text (about 0.1 ms), so that no index stays in memory
/// for a check that runs only when a password is set.
pub fn is_common_password(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON_PASSWORDS.lines().any(|line| line == lower)
}

/// Length limits keep a huge password from becoming a hashing DoS; a password
/// from the common list is refused.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if is_common_password(password) {
        return Err("is one of the 30,000 most common passwords; choose another".into());
    }
    Ok(())
}

/// A light syntactic check: one `@`, a dot in the domain, no spaces.
pub fn check_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err("must be a valid email address".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_refused_in_any_case_and_others_pass() {
        assert_eq!(COMMON_PASSWORDS.lines().count(), 30_000);
        assert!(is_common_password("password1"));
        assert!(is_common_password("PassWord1"));
        assert!(is_common_password("qqqqqq1"));
        assert!(check_password_policy("iloveyou2").is_err());
        assert!(!is_common_password("correct-horse-battery-staple-42"));
        assert!(check_password_policy("correct-horse-battery-staple-42").is_ok());
    }
}
