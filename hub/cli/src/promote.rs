//! `convoy promote FROM TO` and `convoy promote-check FROM TO`. The gate reads the hub's answer
//! (the hub alone decides which commit of FROM is verified); the push moves TO's *branch*, as
//! `convoy.yaml` names it, to exactly that commit, in the user's own checkout with the user's own
//! Git credentials (the hub never writes Git). A fast-forward push; a TO branch with commits
//! FROM's commit lacks is refused, naming them, unless the user allows the divergence (then the
//! push replaces TO, with a lease on what it was).
//!
//! Decisions: which environments FROM and TO are (by name, else by branch), whether FROM may go
//! to TO now ([`gate`]), and what the push does to TO's branch ([`Checkout::promote`]).

use std::path::{Path, PathBuf};

use convoy_shared::proto::CommitInfo;
pub use convoy_web::promotion::{Promotion, Refusal, divergence, gate};
use serde::Serialize;

use crate::commit_tree::{GitRun, run_git};
use crate::short;

/// Why a promotion in the checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(
        "cannot run git in {dir}: {source}; run `convoy promote` inside a clone of the fleet repository, or pass --repo"
    )]
    Spawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {command}` failed in {dir}: {stderr}")]
    Git { command: String, dir: PathBuf, stderr: String },
    #[error(
        "{dir} is not a Git checkout: run `convoy promote` inside a clone of the fleet repository, or pass --repo DIR"
    )]
    NotACheckout { dir: PathBuf },
    #[error(
        "branch '{branch}' of environment '{env}' is not on remote '{remote}': is this a clone of the repository the hub reads?"
    )]
    NoBranch { env: String, branch: String, remote: String },
    #[error(
        "{commit}, '{env}''s verified commit, is not on its branch '{branch}' at {remote} any more (rewritten?): nothing pushed; wait for the hub to verify the branch's new head"
    )]
    NotOnBranch { env: String, branch: String, remote: String, commit: String },
    #[error("{0}")]
    Divergent(String),
}

/// What a push did (or would do) to TO's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Move {
    /// TO's branch already is at the commit.
    None,
    FastForward,
    /// TO's branch did not exist.
    Create,
    /// TO's branch had commits of its own (allowed with `--allow-divergent`).
    Replace,
}

/// The answer of `convoy promote`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    #[serde(flatten)]
    pub promotion: Promotion,
    /// Where TO's branch was; empty when it did not exist.
    pub previous: String,
    #[serde(rename = "move")]
    pub moved: Move,
    /// TO's own commits the push dropped.
    pub dropped: Vec<CommitInfo>,
    pub dry_run: bool,
    /// The push that ran (or would run).
    pub push: String,
}

impl Promoted {
    /// One line for a person.
    pub fn line(&self) -> String {
        let Promotion { from, to, to_branch, commit, .. } = &self.promotion;
        let (old, new) = (short(&self.previous), short(commit));
        let what = match self.moved {
            Move::None => format!("branch '{to_branch}' already is at {new}"),
            Move::FastForward => format!("branch '{to_branch}' fast-forwarded {old} → {new}"),
            Move::Create => format!("branch '{to_branch}' created at {new}"),
            Move::Replace => format!(
                "branch '{to_branch}' moved {old} → {new} (dropping {} commit(s) of its own)",
                self.dropped.len()
            ),
        };
        if self.dry_run {
            format!("would promote '{from}' to '{to}': {what} (`{}`)", self.push)
        } else {
            format!("promoted '{from}' to '{to}': {what}")
        }
    }
}

/// Where and how to promote.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// A clone of the fleet repository.
    pub dir: PathBuf,
    /// The remote the hub reads (default `origin`).
    pub remote: String,
}

impl Checkout {
    fn git(&self, args: &[&str]) -> Result<String, PromoteError> {
        match run_git(&self.dir, args) {
            Ok(stdout) => Ok(String::from_utf8_lossy(&stdout).trim().to_string()),
            Err(GitRun::Spawn(source)) => Err(PromoteError::Spawn { dir: self.dir.clone(), source }),
            Err(GitRun::Failed(stderr)) => {
                Err(PromoteError::Git { command: args.join(" "), dir: self.dir.clone(), stderr })
            }
        }
    }

    /// The commit `branch` points at on the remote, if the branch exists.
    fn remote_head(&self, branch: &str) -> Result<Option<String>, PromoteError> {
        let listed = self.git(&["ls-remote", "--heads", &self.remote, &format!("refs/heads/{branch}")])?;
        Ok(listed.split_whitespace().next().map(str::to_string))
    }

    /// Pushes the promotion's commit (FROM's verified commit, which must still be on FROM's
    /// branch) to TO's branch. Returns what it did, or with `dry_run` what it would do.
    pub fn promote(
        &self,
        promotion: &Promotion,
        allow_divergent: bool,
        dry_run: bool,
    ) -> Result<Promoted, PromoteError> {
        if !self.dir.join(".git").exists() {
            return Err(PromoteError::NotACheckout { dir: self.dir.clone() });
        }
        let Promotion { from, from_branch, to, to_branch, commit, .. } = promotion;
        self.git(&["fetch", "-q", &self.remote])?;
        let from_head = self.remote_head(from_branch)?.ok_or_else(|| PromoteError::NoBranch {
            env: from.clone(),
            branch: from_branch.clone(),
            remote: self.remote.clone(),
        })?;
        self.git(&["fetch", "-q", &self.remote, &format!("refs/heads/{from_branch}")])?;
        let on_branch = self.git(&["merge-base", "--is-ancestor", commit, &from_head]).is_ok();
        if !on_branch {
            return Err(PromoteError::NotOnBranch {
                env: from.clone(),
                branch: from_branch.clone(),
                remote: self.remote.clone(),
                commit: short(commit).to_string(),
            });
        }
        let old = self.remote_head(to_branch)?;
        let dropped = match &old {
            Some(old) => self.commits_lacking(old, commit)?,
            None => Vec::new(),
        };
        if !dropped.is_empty() && !allow_divergent {
            return Err(PromoteError::Divergent(divergence(to, from, &dropped)));
        }
        let target = format!("{commit}:refs/heads/{to_branch}");
        let lease = old.as_ref().map(|old| format!("--force-with-lease=refs/heads/{to_branch}:{old}"));
        let mut push = vec!["push", "-q"];
        if !dropped.is_empty() {
            push.extend(lease.as_deref());
        }
        push.extend([self.remote.as_str(), target.as_str()]);
        let moved = match &old {
            Some(old) if old == commit => Move::None,
            Some(_) if dropped.is_empty() => Move::FastForward,
            Some(_) => Move::Replace,
            None => Move::Create,
        };
        if !dry_run && moved != Move::None {
            self.git(&push)?;
        }
        Ok(Promoted {
            promotion: promotion.clone(),
            previous: old.unwrap_or_default(),
            moved,
            dropped,
            dry_run,
            push: format!("git {}", push.join(" ")),
        })
    }

    /// Commits reachable from `tip` and not from `base`.
    fn commits_lacking(&self, tip: &str, base: &str) -> Result<Vec<CommitInfo>, PromoteError> {
        let listed = self.git(&["log", "--format=%H %s", tip, "--not", base])?;
        Ok(listed
            .lines()
            .filter_map(|l| l.split_once(' ').or(Some((l, ""))))
            .filter(|(id, _)| !id.is_empty())
            .map(|(id, subject)| CommitInfo { id: id.to_string(), subject: subject.to_string() })
            .collect())
    }
}

/// The checkout `dir` is in (its Git work tree root).
pub fn checkout(dir: &Path, remote: &str) -> Checkout {
    Checkout { dir: crate::repository_root(dir), remote: remote.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An origin with branches `develop` (environment dev) and `main` (environment prod), each
    /// named unlike its environment, and a clone of it with `main` checked out.
    fn repos() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, work) = (tmp.path().join("origin.git"), tmp.path().join("work"));
        git(tmp.path(), &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(tmp.path(), &["init", "-q", "-b", "main", "work"]);
        for (k, v) in [("user.email", "t@convoy.dev"), ("user.name", "T"), ("commit.gpgsign", "false")] {
            git(&work, &["config", k, v]);
        }
        git(&work, &["commit", "-q", "--allow-empty", "-m", "base"]);
        git(&work, &["branch", "develop"]);
        git(&work, &["remote", "add", "origin", origin.to_str().unwrap()]);
        git(&work, &["push", "-q", "origin", "main", "develop"]);
        (tmp, origin, work)
    }

    fn dev_to_prod(verified: &str) -> Promotion {
        Promotion {
            from: "dev".into(),
            from_branch: "develop".into(),
            to: "prod".into(),
            to_branch: "main".into(),
            commit: verified.into(),
            message: String::new(),
        }
    }

    #[test]
    fn a_clean_branch_fast_forwards_the_environments_branch_to_exactly_the_verified_commit() {
        let (_tmp, origin, work) = repos();
        git(&work, &["checkout", "-q", "develop"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "verified"]);
        let verified = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "not yet verified"]);
        git(&work, &["push", "-q", "origin", "develop"]);
        let checkout = checkout(&work, "origin");
        let promotion = dev_to_prod(&verified);
        let dry = checkout.promote(&promotion, false, true).unwrap();
        assert!(
            dry.line().starts_with("would promote 'dev' to 'prod': branch 'main' fast-forwarded"),
            "{}",
            dry.line()
        );
        assert_ne!(git(&origin, &["rev-parse", "main"]), verified, "a dry run pushes nothing");
        let done = checkout.promote(&promotion, false, false).unwrap();
        assert_eq!(done.moved, Move::FastForward, "{}", done.line());
        assert_eq!(git(&origin, &["rev-parse", "main"]), verified, "exactly the verified commit, not dev's head");
        let refs = git(&origin, &["for-each-ref", "--format=%(refname)"]);
        assert_eq!(refs, "refs/heads/develop\nrefs/heads/main", "no branch named after an environment");
        assert_eq!(checkout.promote(&promotion, false, false).unwrap().moved, Move::None);
    }

    #[test]
    fn a_branch_with_its_own_commits_is_refused_unless_allowed() {
        let (_tmp, origin, work) = repos();
        git(&work, &["commit", "-q", "--allow-empty", "-m", "hotfix straight into prod"]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["checkout", "-q", "develop"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "feature"]);
        git(&work, &["push", "-q", "origin", "develop"]);
        let verified = git(&work, &["rev-parse", "HEAD"]);
        let checkout = checkout(&work, "origin");
        let promotion = dev_to_prod(&verified);
        let refused = checkout.promote(&promotion, false, false).unwrap_err().to_string();
        assert!(refused.contains("hotfix straight into prod") && refused.contains("--allow-divergent"), "{refused}");
        assert_ne!(git(&origin, &["rev-parse", "main"]), verified);
        let dry = checkout.promote(&promotion, true, true).unwrap();
        assert!(dry.push.contains("--force-with-lease=refs/heads/main:"), "{}", dry.push);
        let done = checkout.promote(&promotion, true, false).unwrap();
        assert!(done.line().contains("dropping 1 commit"), "{}", done.line());
        assert_eq!(git(&origin, &["rev-parse", "main"]), verified);
    }

    #[test]
    fn a_verified_commit_no_longer_on_its_branch_is_not_pushed() {
        let (_tmp, origin, work) = repos();
        git(&work, &["checkout", "-q", "develop"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "verified, then force-pushed away"]);
        let verified = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["push", "-q", "origin", "develop"]);
        git(&work, &["reset", "-q", "--hard", "HEAD~1"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "rewritten"]);
        git(&work, &["push", "-q", "-f", "origin", "develop"]);
        let before = git(&origin, &["rev-parse", "main"]);
        let err = checkout(&work, "origin").promote(&dev_to_prod(&verified), false, false).unwrap_err();
        assert!(matches!(err, PromoteError::NotOnBranch { .. }) && err.to_string().contains("'develop'"), "{err}");
        assert_eq!(git(&origin, &["rev-parse", "main"]), before);
    }

    #[test]
    fn outside_a_checkout_the_error_points_to_repo() {
        let tmp = tempfile::tempdir().unwrap();
        let err = checkout(tmp.path(), "origin").promote(&dev_to_prod("abc"), false, false).unwrap_err();
        assert!(err.to_string().contains("--repo"), "{err}");
    }
}
