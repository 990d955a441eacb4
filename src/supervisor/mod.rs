//! Supervision for actix actors, closing the gaps of actix 0.13's own `Supervisor`.
//!
//! - [`SupervisorBuilder`] owns children in start order, restarts them with a
//!   [`Strategy`] (`one_for_one`, `one_for_all`, `rest_for_one`) and a [`RestartPolicy`]
//!   (restart intensity, exponential backoff with jitter), and escalates when it gives up;
//! - children are actix actors built fresh by a factory on every start (panics included:
//!   see `child.rs`), or nested supervisors;
//! - callers talk to actors only through [`ActorHandle`]s: stable across restarts, with a
//!   bounded mailbox, a deadline on every request and typed [`AskError`]s;
//! - [`DynamicSupervisor`] holds children added at run time (one per booking saga), up
//!   to a limit, restarted by the same policy and shown in the same snapshots;
//! - [`SupervisorSnapshot`] is the tree as operators see it (`/v1/system/supervisors`,
//!   `/health`, `/metrics`).

mod child;
mod dynamic;
mod handle;
mod policy;
mod tree;

pub use child::{mark_polling_actor_down, ChildSpec};
pub use dynamic::{ChildEnd, ChildPermit, DynamicSpec, DynamicSupervisor};
pub use handle::{ActorHandle, AskError, Liveness};
pub use policy::{backoff_delay, Exit, IntensityWindow, Restart, RestartPolicy, Strategy};
pub use tree::{
    ChildSnapshot, ChildState, Failure, SupervisorBuilder, SupervisorRef, SupervisorSnapshot,
    SupervisorState,
};
