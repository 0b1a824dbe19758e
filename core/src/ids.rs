//! Reading the protocol's id messages (`FrameworkId`, `AgentId`, ...), which arrive
//! as optional fields, without repeating `.as_ref().map(|i| i.value...)` everywhere.

use agora_proto as pb;

/// An id message: a wrapper around one string.
pub trait IdValue {
    fn value(&self) -> &str;
}

macro_rules! id_value {
    ($($ty:ty),*) => {
        $(impl IdValue for $ty {
            fn value(&self) -> &str {
                &self.value
            }
        })*
    };
}

id_value!(
    pb::FrameworkId,
    pb::AgentId,
    pb::TaskId,
    pb::ExecutorId,
    pb::OfferId
);

/// The id's value, or `""` when the field is absent.
pub fn id_str<T: IdValue>(id: &Option<T>) -> &str {
    id.as_ref().map(IdValue::value).unwrap_or("")
}

/// The id's value, owned, or `""` when the field is absent.
pub fn id_of<T: IdValue>(id: &Option<T>) -> String {
    id_str(id).to_string()
}

/// The id's value when the field is present.
pub fn id_opt<T: IdValue>(id: &Option<T>) -> Option<String> {
    id.as_ref().map(|i| i.value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_present() {
        let none: Option<pb::TaskId> = None;
        assert_eq!(id_str(&none), "");
        assert_eq!(id_opt(&none), None);
        let some = Some(pb::TaskId { value: "t".into() });
        assert_eq!(id_of(&some), "t");
        assert_eq!(id_opt(&some).as_deref(), Some("t"));
    }
}
