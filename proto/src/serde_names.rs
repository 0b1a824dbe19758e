//! Serializers that write enum fields (stored by prost as `i32`) by their proto name,
//! so JSON reads `"TASK_RUNNING"` rather than `2`. Unknown numbers stay numbers.

use crate::v1::{
    TaskState, container_info, executor_info, framework_info, health_check, task_status, volume,
};
use serde::Serializer;

macro_rules! named {
    ($fn_name:ident, $ty:ty) => {
        /// Serializes the enum value by name, or as its number when unknown.
        pub fn $fn_name<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
            match <$ty>::try_from(*value) {
                Ok(known) => s.serialize_str(known.as_str_name()),
                Err(_) => s.serialize_i32(*value),
            }
        }
    };
}

named!(task_state, TaskState);
named!(status_source, task_status::Source);
named!(status_reason, task_status::Reason);
named!(container_type, container_info::Type);
named!(executor_type, executor_info::Type);
named!(health_check_type, health_check::Type);
named!(volume_mode, volume::Mode);
named!(capability_type, framework_info::capability::Type);

/// Serializes bytes as lowercase hex.
pub fn hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    s.serialize_str(&out)
}
