//! Placement: Marathon's constraints and the choice of offer for each instance. Pure:
//! no I/O, no clocks, no randomness; the same input gives the same launches.
//!
//! The caller turns the offers of one round into [`AgentOffer`]s, its apps' needs into
//! [`Demand`]s, and where their instances run into [`Placed`]; [`place`](fn@place) answers with
//! the [`Launch`]es (offer, ports and resources of each instance) and, per app not fully
//! placed, [`Rejections`] with Marathon's reject reasons and a sentence saying why.

pub mod constraint;
pub mod demand;
pub mod offer;
pub mod place;

#[cfg(test)]
mod tests;

pub use constraint::{Constraint, Field, Operator};
pub use demand::Demand;
pub use offer::{AgentOffer, InvalidOffer, Location, Placed, Pool};
pub use place::{Launch, PlacementLimits, PlacementOutcome, Rejections, place, reasons};
