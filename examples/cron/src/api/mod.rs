//! The REST API: Metronome's `/v1`, one file per endpoint family.
