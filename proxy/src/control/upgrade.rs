//! Zero-downtime binary replacement: a running proxy starts its successor
//! (the binary at the path it was started from, with the same arguments),
//! hands it the listening sockets, and drains.
//!
//! `SIGUSR2` starts it. The successor gets every listening socket (the
//! listeners' and the admin API's) as inherited file descriptors — the same
//! kernel sockets, so their accept queues carry over and no connection is
//! refused — plus a Unix socket path for a short handshake:
//!
//! 1. the successor loads and checks its config (a bad config, a plugin that
//!    fails: it says why and exits; the running proxy goes on as if nothing
//!    happened) and says `loaded`;
//! 2. the running proxy hands over its control path ([`Control::hand_over`]:
//!    rollouts saved to the moment and stopped, the state store closed) and
//!    says `released`;
//! 3. the successor opens the state store, resumes the rollouts where they
//!    stand, starts accepting on the inherited sockets (and binds listeners
//!    that are new in its config) and says `serving`;
//! 4. the running proxy stops accepting and drains as on `SIGTERM`.
//!
//! Should the successor die after step 2, the running proxy takes its control
//! path back. Under systemd (`Type=notify`, `NotifyAccess=all`) the successor
//! reports its PID as the service's main PID (see `deploy/systemd/switchyard.service`).

use crate::control::Control;
use crate::error::Error;
use command_fds::{CommandFdExt, FdMapping};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The successor's handshake socket path.
const ENV_SOCKET: &str = "SWITCHYARD_UPGRADE_SOCKET";
/// Which inherited descriptor is which listener (JSON).
const ENV_SOCKETS: &str = "SWITCHYARD_UPGRADE_LISTENERS";
/// How long each step of the handshake may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The name the admin listener's sockets are passed under.
pub const ADMIN: &str = "@admin";

/// One listener's sockets as passed: its name, the address its config
/// asked for, and the inherited descriptors' indexes.
#[derive(Serialize, Deserialize)]
struct Passed {
    name: String,
    bind: SocketAddr,
    fds: Vec<usize>,
}

/// The listening sockets a process can pass to its successor (duplicates of
/// the ones it accepts on), with what the config asked for.
#[derive(Default)]
pub struct Sockets {
    listeners: Vec<(String, SocketAddr, Vec<TcpListener>)>,
}

impl Sockets {
    /// Keeps duplicates of `sockets`, the listener `name` bound for `bind`.
    pub fn add(&mut self, name: &str, bind: SocketAddr, sockets: &[TcpListener]) -> Result<(), Error> {
        let dups = sockets
            .iter()
            .map(TcpListener::try_clone)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Runtime(format!("cannot keep listener `{name}` for upgrades: {e}")))?;
        self.listeners.push((name.to_owned(), bind, dups));
        Ok(())
    }
}

/// Sockets inherited from a predecessor, and the handshake with it.
pub struct Inherited {
    listeners: Vec<(String, SocketAddr, Vec<TcpListener>)>,
    channel: BufReader<UnixStream>,
}

impl Inherited {
    /// The predecessor's sockets when this process was started by an upgrade; `None` otherwise.
    pub async fn from_env() -> Result<Option<Self>, Error> {
        let Some(path) = std::env::var_os(ENV_SOCKET) else { return Ok(None) };
        let described = std::env::var(ENV_SOCKETS).unwrap_or_default();
        std::env::remove_var(ENV_SOCKET);
        std::env::remove_var(ENV_SOCKETS);
        let bad = |e: String| Error::Runtime(format!("upgrade: {e}"));
        let passed: Vec<Passed> =
            serde_json::from_str(&described).map_err(|e| bad(format!("bad {ENV_SOCKETS}: {e}")))?;
        let mut fds = listenfd::ListenFd::from_env();
        let mut listeners = Vec::new();
        for p in passed {
            let mut sockets = Vec::new();
            for i in p.fds {
                match fds.take_tcp_listener(i) {
                    Ok(Some(l)) => sockets.push(l),
                    Ok(None) => return Err(bad(format!("listener `{}`: descriptor {i} was not passed", p.name))),
                    Err(e) => return Err(bad(format!("listener `{}`: {e}", p.name))),
                }
            }
            listeners.push((p.name, p.bind, sockets));
        }
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| bad(format!("cannot reach the running proxy at {}: {e}", Path::new(&path).display())))?;
        Ok(Some(Self { listeners, channel: BufReader::new(stream) }))
    }

    /// The inherited sockets of listener `name`, if the predecessor had it
    /// bound for the same address.
    pub fn take(&mut self, name: &str, bind: SocketAddr) -> Option<Vec<TcpListener>> {
        let i = self.listeners.iter().position(|(n, b, _)| n == name && *b == bind)?;
        Some(self.listeners.swap_remove(i).2)
    }

    /// Says `loaded` and waits until the predecessor has released the control path.
    pub async fn loaded(&mut self) -> Result<(), Error> {
        say(&mut self.channel, "loaded").await?;
        expect(&mut self.channel, "released").await
    }

    /// Says the config could not be used (the predecessor logs it and goes on).
    pub async fn failed(&mut self, why: &str) {
        let _ = say(&mut self.channel, &format!("failed {}", why.replace('\n', " "))).await;
    }

    /// Says `serving`: the predecessor stops accepting and drains. Sockets of
    /// listeners no longer in the config are closed here.
    pub async fn serving(mut self) -> Result<(), Error> {
        for (name, _, _) in &self.listeners {
            tracing::info!(listener = %name, "closing a listener the new config no longer has");
        }
        self.listeners.clear();
        say(&mut self.channel, "serving").await?;
        sd_notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
        Ok(())
    }
}

/// The path this process was started from (resolved at start, so an
/// upgrade runs the file now at that path: the new binary).
pub fn own_binary() -> Option<PathBuf> {
    std::env::current_exe().ok().filter(|p| p.is_file())
}

/// Starts a successor (`binary` with `args`) and hands it `sockets` and the
/// control path. `Ok` once the successor serves: the caller drains and exits.
/// On `Err` this process goes on serving (its control path taken back if it
/// was already handed over).
pub async fn start_successor(
    control: &Arc<Control>,
    sockets: &Sockets,
    binary: &Path,
    args: &[OsString],
    runtime_dir: &Path,
) -> Result<(), Error> {
    let fail = |e: String| Error::Runtime(format!("upgrade: {e}"));
    let path = runtime_dir.join(format!("switchyard-upgrade-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| fail(format!("cannot bind {}: {e}", path.display())))?;
    let _cleanup = RemoveOnDrop(path.clone());

    let mut mappings = Vec::new();
    let mut passed = Vec::new();
    for (name, bind, socks) in &sockets.listeners {
        let mut fds = Vec::new();
        for s in socks {
            let fd: OwnedFd = s.try_clone().map_err(|e| fail(format!("listener `{name}`: {e}")))?.into();
            fds.push(mappings.len());
            mappings.push(FdMapping { parent_fd: fd, child_fd: 3 + mappings.len() as i32 });
        }
        passed.push(Passed { name: name.clone(), bind: *bind, fds });
    }
    let described = serde_json::to_string(&passed).map_err(|e| fail(e.to_string()))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.args(args)
        .env(ENV_SOCKET, &path)
        .env(ENV_SOCKETS, described)
        .env("LISTEN_FDS", mappings.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS_FIRST_FD");
    cmd.fd_mappings(mappings).map_err(|_| fail("descriptor numbers collide".into()))?;
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start {}: {e}", binary.display())))?;
    tracing::info!(pid = child.id(), binary = %binary.display(), "upgrade: successor started");

    let result = handshake(control, &listener, child.id()).await;
    if result.is_err() {
        // Reap it if it exited; a successor that hangs is stopped.
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
        }
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    result
}

async fn handshake(control: &Arc<Control>, listener: &UnixListener, successor: u32) -> Result<(), Error> {
    // Only the successor may take over: another local process connecting to
    // the socket is turned away (its peer credentials name another PID).
    let accept = async {
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| Error::Runtime(format!("upgrade: {e}")))?;
            match stream.peer_cred().map(|c| c.pid()) {
                Ok(Some(pid)) if pid as u32 == successor => return Ok::<_, Error>(stream),
                other => {
                    tracing::warn!(peer = ?other, "upgrade: a process other than the successor connected; ignored")
                }
            }
        }
    };
    let stream = tokio::time::timeout(STEP_TIMEOUT, accept)
        .await
        .map_err(|_| Error::Runtime("upgrade: the successor did not connect within 60 s".into()))??;
    let mut channel = BufReader::new(stream);
    expect(&mut channel, "loaded").await?;
    control.hand_over().await;
    let served = async {
        say(&mut channel, "released").await?;
        expect(&mut channel, "serving").await
    }
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "upgrade: the successor failed after taking the control path; taking it back");
        control.take_back().await?;
        return Err(e);
    }
    Ok(())
}

async fn say(channel: &mut BufReader<UnixStream>, line: &str) -> Result<(), Error> {
    let stream = channel.get_mut();
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| Error::Runtime(format!("upgrade: the other process is gone: {e}")))
}

async fn expect(channel: &mut BufReader<UnixStream>, word: &str) -> Result<(), Error> {
    let mut line = String::new();
    let read = tokio::time::timeout(STEP_TIMEOUT, channel.read_line(&mut line))
        .await
        .map_err(|_| Error::Runtime(format!("upgrade: no `{word}` within 60 s")))?
        .map_err(|e| Error::Runtime(format!("upgrade: {e}")))?;
    match line.trim_end() {
        l if l == word => Ok(()),
        _ if read == 0 => Err(Error::Runtime(format!("upgrade: the other process exited before `{word}`"))),
        l => Err(Error::Runtime(format!(
            "upgrade: {}",
            l.strip_prefix("failed ").map_or_else(|| format!("expected `{word}`, got `{l}`"), str::to_owned)
        ))),
    }
}

/// Tells systemd (when it started this process with `NOTIFY_SOCKET`) about `state`.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr)),
        None => socket.send_to(state.as_bytes(), Path::new(&path)),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
