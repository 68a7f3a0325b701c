//! Sign-in for the console: the password check (constant time, one at a
//! time, slowed after a failure), sessions held in memory, and the CSRF
//! token each session's forms carry.
//!
//! Sessions live in this process: the console is served on one host's
//! admin listener, and a restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "wp_console";

/// The sign-in form's own CSRF cookie (there is no session yet).
pub const SIGN_IN_COOKIE: &str = "wp_console_sign_in";

/// How long a failed sign-in holds the next one back. Sign-ins are
/// checked one at a time, so this bounds guesses to about one a second.
const FAILED_SIGN_IN_DELAY: Duration = Duration::from_secs(1);

/// Most sessions held at once; past it, the one closest to expiring goes.
const MAX_SESSIONS: usize = 10_000;

/// 32 random bytes as 64 hex digits: a session id or a CSRF token.
///
/// # Errors
/// When the system's random source fails, nothing is signed in.
pub fn random_token() -> Option<String> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.ct_eq(&b).into()
}

/// Why a sign-in did not start a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefused {
    /// Not the password.
    Wrong,
    /// Another sign-in is being checked (or waits out its failure delay).
    Busy,
    /// No random bytes for the session id.
    NoRandomness,
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token its forms carry (`csrf`), checked on every POST.
    pub csrf: String,
    expires: Instant,
}

/// The password, if any, and the sessions signed in with it.
pub struct Sessions {
    /// The password and how long a sign-in lasts, which a reload may change.
    settings: std::sync::RwLock<(Option<Secret>, Duration)>,
    sessions: Mutex<HashMap<String, Session>>,
    /// One sign-in checked at a time.
    checking: Semaphore,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions signed in with `password` (none: anyone reaching the
    /// admin listener, which is then on loopback), lasting `ttl`.
    pub fn new(password: Option<Secret>, ttl: Duration) -> Self {
        Sessions {
            settings: std::sync::RwLock::new((password, ttl)),
            sessions: Mutex::default(),
            checking: Semaphore::new(1),
        }
    }

    /// Whether a password is needed.
    pub fn needs_password(&self) -> bool {
        self.settings().0.is_some()
    }

    /// How long a sign-in lasts.
    pub fn ttl(&self) -> Duration {
        self.settings().1
    }

    /// Take up a reloaded `[console]`: a new password signs everyone out
    /// (it is how a leaked one is rotated); a new `ttl` holds for sign-ins
    /// from now on.
    pub fn reconfigure(&self, password: Option<Secret>, ttl: Duration) {
        // Under the settings' lock: a sign-in checked against the old
        // password either started before (and is cleared here) or sees the
        // new one.
        let mut settings = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed =
            settings.0.as_ref().map(Secret::expose) != password.as_ref().map(Secret::expose);
        *settings = (password, ttl);
        if changed {
            self.lock().clear();
        }
    }

    fn settings(&self) -> (Option<Secret>, Duration) {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The session whose id is `id`, if it has not expired.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.lock();
        match sessions.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Start a session without a password (none is configured): its id.
    pub fn open(&self, now: Instant) -> Option<String> {
        if self.needs_password() {
            return None;
        }
        self.start(now)
    }

    /// Check `password` and start a session: its id, or why not (after
    /// the failure delay for a wrong password). One check at a time: a
    /// sign-in arriving during another's is turned away at once rather
    /// than queued, so guesses cannot line up to hold the others back.
    pub async fn sign_in(&self, password: &str) -> Result<String, SignInRefused> {
        let expected = self.settings().0.ok_or(SignInRefused::Wrong)?;
        let Ok(_one_at_a_time) = self.checking.try_acquire() else {
            return Err(SignInRefused::Busy);
        };
        if same_token(password, expected.expose()) {
            // Started under the settings' lock, with the password checked
            // again: a reload that changes it in between (and signs
            // everyone out) cannot be outlived by this session.
            let settings = self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if settings.0.as_ref().map(Secret::expose) != Some(expected.expose()) {
                return Err(SignInRefused::Wrong);
            }
            return self
                .start_with(Instant::now(), settings.1)
                .ok_or(SignInRefused::NoRandomness);
        }
        tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
        Err(SignInRefused::Wrong)
    }

    /// End session `id`.
    pub fn sign_out(&self, id: &str) {
        self.lock().remove(id);
    }

    fn start(&self, now: Instant) -> Option<String> {
        self.start_with(now, self.ttl())
    }

    fn start_with(&self, now: Instant, ttl: Duration) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf,
                expires: now + ttl,
            },
        );
        Some(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding it leaves a map that is still whole.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wrong_password_is_refused_after_a_delay_and_sessions_expire() {
        let sessions = Sessions::new(Some(Secret::new("correct horse")), Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        assert_eq!(sessions.sign_in("wrong").await, Err(SignInRefused::Wrong));
        assert!(started.elapsed() >= FAILED_SIGN_IN_DELAY);
        let now = Instant::now();
        assert!(sessions.open(now).is_none(), "a password is configured");
        let id = sessions.sign_in("correct horse").await.unwrap();
        let session = sessions.get(&id, now).unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.get(&id, now + Duration::from_secs(61)).is_none());
        assert!(sessions.get(&id, now).is_none(), "expired is gone");
        let id = sessions.sign_in("correct horse").await.unwrap();
        sessions.sign_out(&id);
        assert!(sessions.get(&id, now).is_none());
        // A new password (a reload) signs everyone out; the same one does not.
        let id = sessions.sign_in("correct horse").await.unwrap();
        sessions.reconfigure(Some(Secret::new("correct horse")), Duration::from_secs(60));
        assert!(sessions.get(&id, now).is_some());
        sessions.reconfigure(Some(Secret::new("battery staple")), Duration::from_secs(60));
        assert!(sessions.get(&id, now).is_none());
        assert!(sessions.sign_in("battery staple").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_in_during_anothers_failure_delay_is_turned_away_not_queued() {
        let sessions = std::sync::Arc::new(Sessions::new(
            Some(Secret::new("correct horse")),
            Duration::from_secs(60),
        ));
        let guessing = {
            let sessions = sessions.clone();
            tokio::spawn(async move { sessions.sign_in("guess").await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            sessions.sign_in("correct horse").await,
            Err(SignInRefused::Busy)
        );
        assert_eq!(guessing.await.unwrap(), Err(SignInRefused::Wrong));
        assert!(sessions.sign_in("correct horse").await.is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
