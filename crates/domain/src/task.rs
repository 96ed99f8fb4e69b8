use crate::error::{Error, ErrorCode, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => TaskStatus::Queued,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "canceled" => TaskStatus::Canceled,
            other => return Err(Error::internal(format!("unknown task status {other}"))),
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Canceled)
    }

    /// The state machine: queued → running → succeeded | failed | canceled;
    /// queued → canceled; running → queued only when a lease expires.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Queued, Running) | (Queued, Canceled) | (Running, Succeeded) | (Running, Failed) | (Running, Canceled) | (Running, Queued)
        )
    }

    pub fn check_cancelable(self) -> Result<()> {
        if self.can_become(TaskStatus::Canceled) {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::TaskNotCancelable, format!("a {} task cannot be canceled", self.as_str())))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Generate,
    Edit,
    Variation,
    Upscale,
    Restyle,
}

impl TaskKind {
    pub const ALL: &'static [TaskKind] = &[TaskKind::Generate, TaskKind::Edit, TaskKind::Variation, TaskKind::Upscale, TaskKind::Restyle];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Generate => "generate",
            TaskKind::Edit => "edit",
            TaskKind::Variation => "variation",
            TaskKind::Upscale => "upscale",
            TaskKind::Restyle => "restyle",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        TaskKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| Error::invalid(format!("unknown task kind {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn c08_terminal_states_never_move() {
        for from in [Succeeded, Failed, Canceled] {
            for to in [Queued, Running, Succeeded, Failed, Canceled] {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
            assert_eq!(from.check_cancelable().unwrap_err().code, ErrorCode::TaskNotCancelable);
        }
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(Queued));
        assert!(!Queued.can_become(Succeeded));
    }

    #[test]
    fn kind_strings_round_trip() {
        for k in TaskKind::ALL {
            assert_eq!(TaskKind::parse(k.as_str()).unwrap(), *k);
        }
        assert!(TaskKind::parse("paint").is_err());
    }

    #[test]
    fn status_strings_round_trip() {
        for s in [Queued, Running, Succeeded, Failed, Canceled] {
            assert_eq!(TaskStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(TaskStatus::parse("done").is_err());
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TaskStatus::parse(&s)
    }
}
