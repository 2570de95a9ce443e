//! The names of the metrics this crate reports through the [`metrics`] facade.
//!
//! No exporter is installed by the crate: install one (for example
//! `metrics-exporter-prometheus`) in your application to collect them.
//!
//! | name | kind | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `kcl_leases_held` | gauge | leases | — | leases this worker holds |
//! | `kcl_lease_target` | gauge | leases | — | the per-worker target of the last assignment |
//! | `kcl_lease_spillover` | gauge | leases | — | how far `max_leases_for_worker` lowered the target |
//! | `kcl_lease_taker_rounds_total` | counter | rounds | — | taker rounds completed |
//! | `kcl_lease_scans_total` | counter | scans | — | successful lease table scans |
//! | `kcl_lease_renewals_total` | counter | writes | — | renewal attempts |
//! | `kcl_lease_takes_total` | counter | leases | — | leases taken (unowned, expired, reclaimed, handed over) |
//! | `kcl_lease_steals_total` | counter | leases | — | graceful hand-offs started towards this worker |
//! | `kcl_lease_take_conflicts_total` | counter | writes | — | takes and steals that lost a race |
//! | `kcl_leases_lost_total` | counter | leases | — | leases lost (taken away or not renewed in time) |

/// Gauge: leases this worker holds.
pub const LEASES_HELD: &str = "kcl_leases_held";
/// Gauge: the per-worker target of the last assignment.
pub const LEASE_TARGET: &str = "kcl_lease_target";
/// Gauge: how far `max_leases_for_worker` lowered the target.
pub const LEASE_SPILLOVER: &str = "kcl_lease_spillover";
/// Counter: taker rounds completed.
pub const LEASE_TAKER_ROUNDS: &str = "kcl_lease_taker_rounds_total";
/// Counter: successful lease table scans.
pub const LEASE_SCANS: &str = "kcl_lease_scans_total";
/// Counter: renewal attempts.
pub const LEASE_RENEWALS: &str = "kcl_lease_renewals_total";
/// Counter: leases taken.
pub const LEASE_TAKES: &str = "kcl_lease_takes_total";
/// Counter: graceful hand-offs started towards this worker.
pub const LEASE_STEALS: &str = "kcl_lease_steals_total";
/// Counter: takes and steals that lost a race.
pub const LEASE_TAKE_CONFLICTS: &str = "kcl_lease_take_conflicts_total";
/// Counter: leases lost.
pub const LEASES_LOST: &str = "kcl_leases_lost_total";
