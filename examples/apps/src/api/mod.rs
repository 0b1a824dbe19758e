//! The REST API: Marathon's `/v2`, one file per endpoint family.
