//! The plan stage: render per cluster → assignments. From the fleet model and each
//! environment's snapshot, the [`planner`] renders every app targeted at every cluster and
//! builds one content-addressed [`Assignment`](convoy_shared::model::Assignment) per cluster.
//! It knows nothing of rollouts, agents or the published view.
//!
//! Decisions: which apps target which cluster; which overlay each (app, cluster) renders; what a
//! render error leaves (that app's last good objects); what a commit must re-render.

pub mod planner;
