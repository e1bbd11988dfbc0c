//! stockorder-tools: what talks to a stockorder service from the outside. The original's two
//! demo clients ([`client`]), a load generator ([`load`]), the shutdown proof ([`prove`]) and
//! the rolling restart behind HAProxy ([`rolling`]).
//!
//! Nothing here links the service: servers are started as processes ([`service`]), spoken to
//! over REST and gRPC only, and what they stored is read back through the same APIs. Their
//! JSON log is read only for the stable `event` names the service documents
//! (`docs/log-events.md`), never for message wording.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod client;
pub mod duration;
pub mod load;
pub mod process;
pub mod proto;
pub mod prove;
pub mod rolling;
pub mod service;
mod watchers;
