use std::fmt;

/// Stable, snake_case error codes. Every surface (native API, pages, later the
/// OpenAI-compatible API) maps these once; clients may rely on the strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidJson,
    InvalidInput,
    InvalidImage,
    ImageTooLarge,
    PromptTooLong,
    PayloadTooLarge,
    Unauthenticated,
    InvalidCredentials,
    Forbidden,
    CsrfFailed,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    AgeRequirementNotMet,
    PasswordTooShort,
    PasswordTooLong,
    InvalidEmail,
    TaskNotCancelable,
    IdempotencyConflict,
    AccountSuspended,
    RateLimited,
    Unavailable,
    Internal,
    TooManyAttempts,
    InvalidToken,
    InvalidCode,
    EmailNotVerified,
    ExternalSignInFailed,
    IdentityInUse,
    LastSignInMethod,
    ReauthenticationRequired,
    InsufficientCredits,
    AccountInDebt,
    InvalidSignature,
    ContentPolicyViolation,
    WebhookUrlNotAllowed,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidInput,
        ErrorCode::InvalidImage,
        ErrorCode::ImageTooLarge,
        ErrorCode::PromptTooLong,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::CsrfFailed,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::EmailTaken,
        ErrorCode::AgeRequirementNotMet,
        ErrorCode::PasswordTooShort,
        ErrorCode::PasswordTooLong,
        ErrorCode::InvalidEmail,
        ErrorCode::TaskNotCancelable,
        ErrorCode::IdempotencyConflict,
        ErrorCode::AccountSuspended,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::TooManyAttempts,
        ErrorCode::InvalidToken,
        ErrorCode::InvalidCode,
        ErrorCode::EmailNotVerified,
        ErrorCode::ExternalSignInFailed,
        ErrorCode::IdentityInUse,
        ErrorCode::LastSignInMethod,
        ErrorCode::ReauthenticationRequired,
        ErrorCode::InsufficientCredits,
        ErrorCode::AccountInDebt,
        ErrorCode::InvalidSignature,
        ErrorCode::ContentPolicyViolation,
        ErrorCode::WebhookUrlNotAllowed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::PromptTooLong => "prompt_too_long",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CsrfFailed => "csrf_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::AgeRequirementNotMet => "age_requirement_not_met",
            ErrorCode::PasswordTooShort => "password_too_short",
            ErrorCode::PasswordTooLong => "password_too_long",
            ErrorCode::InvalidEmail => "invalid_email",
            ErrorCode::TaskNotCancelable => "task_not_cancelable",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::AccountSuspended => "account_suspended",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InvalidCode => "invalid_code",
            ErrorCode::EmailNotVerified => "email_not_verified",
            ErrorCode::ExternalSignInFailed => "external_sign_in_failed",
            ErrorCode::IdentityInUse => "identity_in_use",
            ErrorCode::LastSignInMethod => "last_sign_in_method",
            ErrorCode::ReauthenticationRequired => "reauthentication_required",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::AccountInDebt => "account_in_debt",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::ContentPolicyViolation => "content_policy_violation",
            ErrorCode::WebhookUrlNotAllowed => "webhook_url_not_allowed",
        }
    }

    /// The HTTP status for this code; the one place the mapping lives.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidInput
            | ErrorCode::InvalidImage
            | ErrorCode::PromptTooLong
            | ErrorCode::AgeRequirementNotMet
            | ErrorCode::PasswordTooShort
            | ErrorCode::PasswordTooLong
            | ErrorCode::InvalidEmail
            | ErrorCode::InvalidToken
            | ErrorCode::ExternalSignInFailed
            | ErrorCode::InvalidSignature
            | ErrorCode::ContentPolicyViolation
            | ErrorCode::WebhookUrlNotAllowed => 400,
            ErrorCode::Unauthenticated | ErrorCode::InvalidCredentials | ErrorCode::InvalidCode | ErrorCode::ReauthenticationRequired => {
                401
            }
            ErrorCode::Forbidden | ErrorCode::CsrfFailed | ErrorCode::AccountSuspended | ErrorCode::EmailNotVerified => 403,
            // Payment Required: buy credits (or settle a refunded purchase).
            ErrorCode::InsufficientCredits | ErrorCode::AccountInDebt => 402,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::EmailTaken
            | ErrorCode::TaskNotCancelable
            | ErrorCode::IdempotencyConflict
            | ErrorCode::IdentityInUse
            | ErrorCode::LastSignInMethod => 409,
            // An image over the byte, side or pixel limits, whatever its
            // body size: the same status as an over-long body.
            ErrorCode::PayloadTooLarge | ErrorCode::ImageTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManyAttempts => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The translation key of the user-facing message for this code.
    pub fn message_key(self) -> String {
        format!("error.{}", self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error type. `message` is English detail for logs and API clients;
/// pages translate by `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds before trying again makes sense (429s); sent as `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), retry_after_secs: None }
    }
    /// The same error, telling the client when to try again.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }
    pub fn not_found() -> Self {
        Error::new(ErrorCode::NotFound, "not found")
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidInput, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_never_500_except_internal() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            if *code != ErrorCode::Internal {
                assert!(code.http_status() < 500 || *code == ErrorCode::Unavailable, "{s}");
            }
        }
    }
}
