//! `caplab ui`: a live view of a cluster in the browser. [`hub`] polls the members (one
//! poller for every page), [`lamport`] joins the members' message traces into a space-time
//! diagram (also `caplab trace`), [`model`] turns their statuses into what the page draws,
//! [`workload`] turns their client-operation counts into live rates, [`page`] assembles the
//! self-contained page and [`server`] serves it with the aggregated JSON.

pub mod clock;
pub mod hub;
pub mod lamport;
pub mod model;
pub mod page;
pub mod server;
pub mod workload;
