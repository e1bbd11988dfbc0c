//! The ports of the hexagon: what the core needs from storage ([`OrderRepository`]) and what it
//! offers to the API adapters ([`OrderService`]). Both are plain traits with native `async fn`,
//! so the core names no driver type and adapters are chosen by generics at wiring time.

mod listing;
mod price;
mod repository;
mod service;

pub use listing::{ListQuery, Page, PageLimit, PageToken};
pub use price::PriceSource;
pub use repository::{Fault, Inserted, OrderRepository, RepositoryError, StatusChange, Transition};
pub use service::{CANCELLED_MESSAGE, Created, OrderError, OrderService};
