//! Rules about task states that every component shares.

use agora_proto::TaskState;

/// Terminal states: the task will never run again and its resources are free.
/// TASK_LOST is treated as terminal, as Mesos does for frameworks that are not
/// partition-aware; TASK_UNREACHABLE and TASK_UNKNOWN are not.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

/// Like [`is_terminal`] for the raw enum number carried on the wire; unknown numbers
/// are not terminal.
pub fn is_terminal_raw(state: i32) -> bool {
    TaskState::try_from(state).is_ok_and(is_terminal)
}

/// The short name used in tables: `RUNNING` for `TASK_RUNNING`.
pub fn short_name(state: i32) -> &'static str {
    TaskState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("TASK_"))
        .unwrap_or("INVALID")
}
