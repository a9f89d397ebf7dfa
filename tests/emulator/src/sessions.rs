//! The session registry: what ExecuteCommand created, the single-use channel tokens it handed
//! out, and which sessions are running, so the websocket side can redeem a token and
//! ResumeSession can issue a new one.
//!
//! Tokens are random, single-use and expire after the configured TTL; they are compared in
//! constant time and never logged. This module holds no sockets and runs no process: the agent
//! registers a reattach sender once a session runs and removes the session when it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::sigv4::constant_time_eq;
use crate::world::ExecEnvironment;

/// Everything the agent needs to run one ExecuteCommand session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// `ecs-execute-command-…`.
    pub session_id: String,
    /// Cluster name.
    pub cluster: String,
    /// Task id (32 hex).
    pub task_id: String,
    /// Container name.
    pub container: String,
    /// `ecs:<cluster>_<task>_<runtimeId>`, as the CLI builds it.
    pub target: String,
    /// The command string, to be split shell-style.
    pub command: String,
    /// Working directory, environment and PATH of the container.
    pub exec: ExecEnvironment,
    /// The cluster's KMS key: the session runs the KMS handshake and is encrypted.
    pub kms_key_id: Option<String>,
}

/// A websocket handed to a running session after a successful reconnect.
pub type Reattach = crate::agent::Connection;

/// What a redeemed token lets the websocket do.
#[derive(Debug)]
pub enum Redeemed {
    /// First connection: start the session.
    Start(Arc<SessionSpec>),
    /// Reconnection: hand the socket to the running session.
    Resume(mpsc::Sender<Reattach>),
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No such session (never created, or already ended).
    #[error("unknown session")]
    UnknownSession,
    /// The token is wrong, already used or expired.
    #[error("invalid token")]
    InvalidToken,
    /// The session is running and has no way to take a second socket.
    #[error("session already connected")]
    AlreadyConnected,
}

#[derive(Debug)]
enum State {
    /// Created by ExecuteCommand, no websocket yet.
    Pending,
    /// Running; new sockets go through this sender.
    Running(mpsc::Sender<Reattach>),
    /// Terminated by TerminateSession before or while running.
    Terminated,
}

#[derive(Debug)]
struct Entry {
    spec: Arc<SessionSpec>,
    tokens: Vec<(String, Instant)>,
    state: State,
    terminate: Arc<tokio::sync::Notify>,
}

/// Shared registry of sessions; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionRegistry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    token_ttl: Duration,
    /// Every token ever handed out, so tests can check that none leaks from the client.
    issued: Arc<Mutex<Vec<String>>>,
    /// Every ExecuteCommand command string, in order: what an API audit log would record.
    commands: Arc<Mutex<Vec<String>>>,
}

impl SessionRegistry {
    /// An empty registry whose tokens live `token_ttl`.
    pub fn new(token_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            token_ttl,
            issued: Arc::new(Mutex::new(Vec::new())),
            commands: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters here, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every token issued so far (ExecuteCommand and ResumeSession), expired or not.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The command string of every session created so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn new_logged_token(&self) -> String {
        let token = new_token();
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(token.clone());
        token
    }

    /// Registers a new session and returns its first token.
    pub fn create(&self, spec: SessionSpec, now: Instant) -> String {
        let token = self.new_logged_token();
        self.commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(spec.command.clone());
        let id = spec.session_id.clone();
        let entry = Entry {
            spec: Arc::new(spec),
            tokens: vec![(token.clone(), now + self.token_ttl)],
            state: State::Pending,
            terminate: Arc::new(tokio::sync::Notify::new()),
        };
        self.lock().insert(id, entry);
        token
    }

    /// A fresh token for a session that is still alive (ResumeSession).
    pub fn issue_token(&self, session_id: &str, now: Instant) -> Option<String> {
        let mut sessions = self.lock();
        let entry = sessions.get_mut(session_id)?;
        if matches!(entry.state, State::Terminated) {
            return None;
        }
        entry.tokens.retain(|(_, expires)| *expires > now);
        let token = self.new_logged_token();
        entry.tokens.push((token.clone(), now + self.token_ttl));
        Some(token)
    }

    /// Checks and consumes a token presented in OpenDataChannel.
    pub fn redeem(
        &self,
        session_id: &str,
        token: &str,
        now: Instant,
    ) -> Result<Redeemed, TokenError> {
        let mut sessions = self.lock();
        let entry = sessions
            .get_mut(session_id)
            .ok_or(TokenError::UnknownSession)?;
        entry.tokens.retain(|(_, expires)| *expires > now);
        // Look at every token so the time taken does not depend on which one matched.
        let mut matched = None;
        for (index, (candidate, _)) in entry.tokens.iter().enumerate() {
            if constant_time_eq(candidate.as_bytes(), token.as_bytes()) {
                matched = Some(index);
            }
        }
        let index = matched.ok_or(TokenError::InvalidToken)?;
        let redeemed = match &entry.state {
            State::Pending => Redeemed::Start(Arc::clone(&entry.spec)),
            State::Running(sender) if !sender.is_closed() => Redeemed::Resume(sender.clone()),
            State::Running(_) => return Err(TokenError::AlreadyConnected),
            State::Terminated => return Err(TokenError::UnknownSession),
        };
        entry.tokens.remove(index);
        Ok(redeemed)
    }

    /// Marks a session as running; reconnections will be sent to `reattach`.
    pub fn mark_running(&self, session_id: &str, reattach: mpsc::Sender<Reattach>) {
        if let Some(entry) = self.lock().get_mut(session_id) {
            entry.state = State::Running(reattach);
        }
    }

    /// A notifier that fires when TerminateSession is called for this session.
    pub fn terminate_signal(&self, session_id: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.lock()
            .get(session_id)
            .map(|e| Arc::clone(&e.terminate))
    }

    /// TerminateSession: ends the session wherever it is. Returns false when unknown.
    pub fn terminate(&self, session_id: &str) -> bool {
        let mut sessions = self.lock();
        match sessions.get_mut(session_id) {
            Some(entry) => {
                entry.state = State::Terminated;
                entry.tokens.clear();
                entry.terminate.notify_one();
                true
            }
            None => false,
        }
    }

    /// Forgets a session that has ended.
    pub fn remove(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// Number of sessions known (pending or running).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session id in the shape ECS returns.
pub fn new_session_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "ecs-execute-command-{}",
        random.get(..17).unwrap_or(&random)
    )
}

/// 244 random bits, hex.
fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> SessionSpec {
        SessionSpec {
            session_id: id.to_string(),
            cluster: "demo".into(),
            task_id: "0".repeat(32),
            container: "app".into(),
            target: "ecs:demo_x_y".into(),
            command: "echo hi".into(),
            exec: ExecEnvironment {
                working_directory: None,
                environment: vec![],
                path_prepend: vec![],
                inherit_environment: false,
            },
            kms_key_id: None,
        }
    }

    #[test]
    fn tokens_are_single_use_and_checked() {
        let registry = SessionRegistry::new(Duration::from_secs(60));
        let now = Instant::now();
        let token = registry.create(spec("s1"), now);
        assert_eq!(
            registry.redeem("s1", "wrong", now).unwrap_err(),
            TokenError::InvalidToken
        );
        assert_eq!(
            registry.redeem("s2", &token, now).unwrap_err(),
            TokenError::UnknownSession
        );
        assert!(matches!(
            registry.redeem("s1", &token, now),
            Ok(Redeemed::Start(_))
        ));
        assert_eq!(
            registry.redeem("s1", &token, now).unwrap_err(),
            TokenError::InvalidToken
        );
    }

    #[test]
    fn tokens_expire() {
        let registry = SessionRegistry::new(Duration::from_secs(60));
        let now = Instant::now();
        let token = registry.create(spec("s1"), now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            registry.redeem("s1", &token, later).unwrap_err(),
            TokenError::InvalidToken
        );
    }

    #[test]
    fn resume_tokens_reach_the_running_session() {
        let registry = SessionRegistry::new(Duration::from_secs(60));
        let now = Instant::now();
        let first = registry.create(spec("s1"), now);
        assert!(matches!(
            registry.redeem("s1", &first, now),
            Ok(Redeemed::Start(_))
        ));
        let (tx, _rx) = mpsc::channel(1);
        registry.mark_running("s1", tx);
        let second = registry.issue_token("s1", now).unwrap();
        assert_ne!(first, second);
        assert!(matches!(
            registry.redeem("s1", &second, now),
            Ok(Redeemed::Resume(_))
        ));
        assert!(registry.terminate("s1"));
        assert!(registry.issue_token("s1", now).is_none());
        registry.remove("s1");
        assert!(registry.is_empty());
    }
}
