//! The release stage: what each cluster is released, given the assignments the plan built at
//! each environment's head. Rollouts move a new revision through an environment's clusters wave
//! by wave ([`rollout`]); a rollback pins an environment at a commit; the [`gate`] says which
//! commit of an environment is verified. Decisions here are pure:
//! they take what they observe and the current time as parameters.
//!
//! Decisions: which clusters a rollout releases now, when a wave is done, soaks or fails;
//! what a pin holds; which commit of an environment is verified (safe to promote).

pub mod gate;
pub mod releaser;
pub mod rollout;
