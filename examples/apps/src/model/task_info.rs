//! Turning an app instance into the `TaskInfo` launched on an offer.
