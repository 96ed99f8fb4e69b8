//! Pure types and rules of Atelier: ids, error codes, the task state machine,
//! image parameters and account rules. No I/O, no async.

pub mod account;
pub mod content;
pub mod error;
pub mod ids;
pub mod params;
pub mod rate;
pub mod rights;
pub mod task;
pub mod time;

pub use error::{Error, ErrorCode, Result};
