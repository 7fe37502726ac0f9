//! `convoy promote FROM TO`: moves TO's branch to exactly the commit the hub verified on FROM,
//! in the user's own checkout with the user's own Git credentials (the hub never writes Git).
//! A fast-forward push; a TO branch with commits FROM's commit lacks is refused, naming them,
//! unless the user allows the divergence (then the push replaces TO, with a lease on what it was).

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_shared::proto::CommitInfo;

use crate::{divergence, short};

/// Why a promotion in the checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("cannot run git in {dir}: {source}; run `convoy promote` inside a clone of the fleet repository")]
    Spawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {command}` failed in {dir}: {stderr}")]
    Git { command: String, dir: PathBuf, stderr: String },
    #[error("{0}")]
    Divergent(String),
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
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|source| PromoteError::Spawn { dir: self.dir.clone(), source })?;
        if !out.status.success() {
            return Err(PromoteError::Git {
                command: args.join(" "),
                dir: self.dir.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The commit `to` points at on the remote, if the branch exists.
    fn remote_head(&self, to: &str) -> Result<Option<String>, PromoteError> {
        let listed = self.git(&["ls-remote", "--heads", &self.remote, &format!("refs/heads/{to}")])?;
        Ok(listed.split_whitespace().next().map(str::to_string))
    }

    /// Pushes `commit` (FROM's verified commit) to branch `to`. Returns what it did.
    pub fn promote(
        &self,
        from: &str,
        to: &str,
        commit: &str,
        allow_divergent: bool,
        dry_run: bool,
    ) -> Result<String, PromoteError> {
        self.git(&["fetch", "-q", &self.remote])?;
        self.git(&["cat-file", "-e", &format!("{commit}^{{commit}}")])?;
        let old = self.remote_head(to)?;
        let extra = match &old {
            Some(old) => self.commits_lacking(old, commit)?,
            None => Vec::new(),
        };
        if !extra.is_empty() && !allow_divergent {
            return Err(PromoteError::Divergent(divergence(to, from, &extra)));
        }
        let target = format!("{commit}:refs/heads/{to}");
        let lease = old.as_ref().map(|old| format!("--force-with-lease=refs/heads/{to}:{old}"));
        let mut push = vec!["push", "-q"];
        if !extra.is_empty() {
            push.extend(lease.as_deref());
        }
        push.extend([self.remote.as_str(), target.as_str()]);
        let what = match (&old, extra.len()) {
            (Some(old), 0) if old == commit => format!("'{to}' already is at {}", short(commit)),
            (Some(old), 0) => format!("'{to}' fast-forwarded {} → {}", short(old), short(commit)),
            (Some(old), n) => {
                format!("'{to}' moved {} → {} (dropping {n} commit(s) of its own)", short(old), short(commit))
            }
            (None, _) => format!("'{to}' created at {}", short(commit)),
        };
        if dry_run {
            return Ok(format!("would push: {what} (`git {}`)", push.join(" ")));
        }
        if old.as_deref() != Some(commit) {
            self.git(&push)?;
        }
        Ok(format!("promoted '{from}' to '{to}': {what}"))
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

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An origin with branches dev and prod, and a clone of it.
    fn repos() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, work) = (tmp.path().join("origin.git"), tmp.path().join("work"));
        git(tmp.path(), &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(tmp.path(), &["init", "-q", "-b", "prod", "work"]);
        for (k, v) in [("user.email", "t@convoy.dev"), ("user.name", "T"), ("commit.gpgsign", "false")] {
            git(&work, &["config", k, v]);
        }
        git(&work, &["commit", "-q", "--allow-empty", "-m", "base"]);
        git(&work, &["branch", "dev"]);
        git(&work, &["remote", "add", "origin", origin.to_str().unwrap()]);
        git(&work, &["push", "-q", "origin", "prod", "dev"]);
        (tmp, origin, work)
    }

    #[test]
    fn a_clean_branch_fast_forwards_to_exactly_the_verified_commit() {
        let (_tmp, origin, work) = repos();
        git(&work, &["checkout", "-q", "dev"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "verified"]);
        let verified = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "not yet verified"]);
        git(&work, &["push", "-q", "origin", "dev"]);
        let checkout = checkout(&work, "origin");
        let dry = checkout.promote("dev", "prod", &verified, false, true).unwrap();
        assert!(dry.starts_with("would push"), "{dry}");
        assert_ne!(git(&origin, &["rev-parse", "prod"]), verified, "a dry run pushes nothing");
        let done = checkout.promote("dev", "prod", &verified, false, false).unwrap();
        assert!(done.contains("fast-forwarded"), "{done}");
        assert_eq!(git(&origin, &["rev-parse", "prod"]), verified, "exactly the verified commit, not dev's head");
    }

    #[test]
    fn a_branch_with_its_own_commits_is_refused_unless_allowed() {
        let (_tmp, origin, work) = repos();
        git(&work, &["commit", "-q", "--allow-empty", "-m", "hotfix straight into prod"]);
        git(&work, &["push", "-q", "origin", "prod"]);
        git(&work, &["checkout", "-q", "dev"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "feature"]);
        git(&work, &["push", "-q", "origin", "dev"]);
        let verified = git(&work, &["rev-parse", "HEAD"]);
        let checkout = checkout(&work, "origin");
        let refused = checkout.promote("dev", "prod", &verified, false, false).unwrap_err().to_string();
        assert!(refused.contains("hotfix straight into prod") && refused.contains("--allow-divergent"), "{refused}");
        assert_ne!(git(&origin, &["rev-parse", "prod"]), verified);
        let done = checkout.promote("dev", "prod", &verified, true, false).unwrap();
        assert!(done.contains("dropping 1 commit"), "{done}");
        assert_eq!(git(&origin, &["rev-parse", "prod"]), verified);
    }
}
