//! Business rules over the ports: identity and timestamps of new orders, risk rules at
//! placement, idempotent creates, paging, cancellation as a conditional transition, the
//! execution of pending orders, and what storage health means for all of them.

mod desk;
mod events;
mod health;
mod tail;
mod watched;

pub use desk::{Executed, OrderDesk};
pub use health::{StorageBroken, StorageHealth, StorageState};
pub use watched::Watched;

#[cfg(test)]
pub(crate) mod tests;
