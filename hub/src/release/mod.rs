//! The release stage: what each cluster is released now, given the assignments the plan built
//! at each environment's head. Rollouts move a new revision through an environment's clusters
//! wave by wave ([`rollout`]); the [`releaser`] owns every rollout and pin, plans the clusters
//! they hold at earlier commits (the held plans), composes each cluster's assignment from its
//! apps' tracks and carries out people's rollout actions, pins and releases; the [`gate`] says
//! which commit of an environment is verified. The decisions take what they observe and the
//! current time as parameters; what they decide goes out through the releaser's
//! [`Ledger`](releaser::Ledger), so this stage never sees the hub's state.
//!
//! Decisions: when a rollout begins and from what; which clusters it releases now, when a wave
//! is done, soaks or fails; what a pin holds and what its release starts; which commit each
//! app's part of an assignment comes from; which commit of an environment is verified (safe to
//! promote).

pub mod gate;
pub mod releaser;
pub mod rollout;
