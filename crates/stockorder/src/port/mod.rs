//! The ports of the hexagon: what the core needs from storage ([`OrderRepository`]), prices
//! ([`PriceSource`]) and metrics ([`OrderMetrics`]), and what it offers to the API adapters
//! ([`OrderService`]). Both are plain traits with native `async fn`,
//! so the core names no driver type and adapters are chosen by generics at wiring time.

mod listing;
mod metrics;
mod price;
mod repository;
mod service;

pub use listing::{ListQuery, Page, PageLimit, PageToken};
pub use metrics::{NoMetrics, OrderMetrics, StoreMetrics};
pub use price::PriceSource;
pub use repository::{
    EventBounds, EventRetention, Fault, Inserted, OrderRepository, QueuePosition, Queued, RepositoryError, Transition,
};
pub use service::{CANCELLED_MESSAGE, Created, EventStart, EventStream, OrderError, OrderService};
