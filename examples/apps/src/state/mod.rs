//! What the apps framework knows beyond the definitions: its instances, and how all
//! of it is kept in the masters' state store.

pub mod instance;
pub mod store;

pub use instance::{Goal, Instance};
