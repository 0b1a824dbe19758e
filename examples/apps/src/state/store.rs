//! How apps state is laid out in the masters' state store.
