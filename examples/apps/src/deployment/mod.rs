//! Deployments: plans from one root group to the next, and the rolling-replace rule. Pure.
