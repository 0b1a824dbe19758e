//! Placement: Marathon's constraints and the choice of offer for each instance. Pure.
