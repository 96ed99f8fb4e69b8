use crate::error::{Error, ErrorCode, Result};

pub const MIN_AGE: u32 = 13;
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Long passphrases are welcome; the cap only bounds hashing work.
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const NAME_MAX_CHARS: usize = 100;
pub const EMAIL_MAX_CHARS: usize = 254;

/// Lowercases and checks an email address: one `@`, a dotted domain, no spaces.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.chars().count() <= EMAIL_MAX_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(Error::new(ErrorCode::InvalidEmail, "enter a valid email address"))
    }
}

/// No composition rules (NIST 800-63B): only length bounds.
pub fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err(Error::new(ErrorCode::PasswordTooShort, format!("use at least {PASSWORD_MIN_CHARS} characters")));
    }
    if n > PASSWORD_MAX_CHARS {
        return Err(Error::new(ErrorCode::PasswordTooLong, format!("use at most {PASSWORD_MAX_CHARS} characters")));
    }
    Ok(())
}

pub fn normalize_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!("name must be 1 to {NAME_MAX_CHARS} characters")));
    }
    Ok(name.to_string())
}

/// A calendar date as given on the sign-up form (`YYYY-MM-DD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    pub fn parse(s: &str) -> Result<Date> {
        let bad = || Error::invalid("date of birth must be a date like 2001-04-30");
        let mut parts = s.trim().splitn(3, '-');
        let year: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let month: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let day: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            _ => return Err(bad()),
        };
        if !(1..=days_in_month).contains(&day) || !(1900..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Date { year, month, day })
    }

    pub fn from_epoch_ms(ms: i64) -> Date {
        let (year, month, day) = crate::time::civil_from_days(ms.div_euclid(86_400_000));
        Date { year, month, day }
    }

    /// The first millisecond of the day, UTC.
    pub fn epoch_ms(&self) -> i64 {
        crate::time::days_from_civil(self.year, self.month, self.day) * 86_400_000
    }

    /// Whole years from `self` to `today`.
    pub fn age_on(&self, today: Date) -> i64 {
        let mut age = today.year - self.year;
        if (today.month, today.day) < (self.month, self.day) {
            age -= 1;
        }
        age
    }
}

/// The age gate (C05): the date of birth is checked and then discarded;
/// only the fact that the check passed is stored.
pub fn check_age(birth_date: &str, today: Date, min_age: u32) -> Result<()> {
    let born = Date::parse(birth_date)?;
    if born > today {
        return Err(Error::invalid("date of birth is in the future"));
    }
    if born.age_on(today) < i64::from(min_age) {
        return Err(Error::new(ErrorCode::AgeRequirementNotMet, format!("you must be at least {min_age} years old to use Atelier")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Date = Date { year: 2026, month: 11, day: 22 };

    #[test]
    fn c05_under_thirteen_is_refused_on_the_day_before_the_birthday() {
        assert_eq!(check_age("2013-11-23", TODAY, 13).unwrap_err().code, ErrorCode::AgeRequirementNotMet);
        assert!(check_age("2013-11-22", TODAY, 13).is_ok());
        assert!(check_age("1980-02-29", TODAY, 13).is_ok());
        assert_eq!(check_age("2030-01-01", TODAY, 13).unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(check_age("2001-02-29", TODAY, 13).unwrap_err().code, ErrorCode::InvalidInput);
        assert_eq!(check_age("", TODAY, 13).unwrap_err().code, ErrorCode::InvalidInput);
    }

    #[test]
    fn passwords_have_length_rules_only() {
        assert_eq!(check_password("short").unwrap_err().code, ErrorCode::PasswordTooShort);
        assert!(check_password("alllowercase").is_ok());
        assert!(check_password(&"x".repeat(64)).is_ok());
        assert_eq!(check_password(&"x".repeat(129)).unwrap_err().code, ErrorCode::PasswordTooLong);
    }

    #[test]
    fn emails_are_normalized() {
        assert_eq!(normalize_email(" Ada@Example.ORG ").unwrap(), "ada@example.org");
        for bad in ["", "ada", "ada@", "@x.org", "a b@x.org", "ada@localhost", "a@b@c.org"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
