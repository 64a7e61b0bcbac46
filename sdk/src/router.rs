//! The router trait and pool handles.

use crate::{Config, Request};

/// A router plugin: chooses a pool per request.
///
/// One instance serves many requests in turn (one per proxy worker thread
/// and rule), so `route` may cache in `self`; it must not rely on seeing
/// every request.
pub trait Router: Sized {
    /// Builds the router from its configuration and the service's pools.
    /// An error refuses the rule, with the message, at load or reload.
    fn init(config: &Config, pools: &Pools) -> Result<Self, String>;

    /// The pool for `req`, or `None` to let the next rule (then the
    /// weights) decide. An error is logged and counted by the host, and the
    /// request falls through to the weights.
    fn route(&self, req: &Request) -> Result<Option<Pool>, String>;

    /// The headers and cookies `route` reads (asked once, after `init`).
    /// Only these (and any the rule lists) reach the plugin.
    fn needs(&self) -> Needs {
        Needs::default()
    }
}

/// The parts of a request a router reads, beyond method, path and sticky key.
///
/// Query parameters and the client's address travel among the headers
/// under names no header can have (see [`Needs::query`] and
/// [`Needs::client_address`]), so components built for any 0.1 host load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Header names; `?name` for a query parameter, [`CLIENT_ADDRESS`] for the client's address.
    pub headers: Vec<String>,
    /// Cookie names.
    pub cookies: Vec<String>,
}

/// The name under which the client's address (the peer the proxy saw, never
/// a client-sent `x-forwarded-for`) travels among a request's headers.
pub const CLIENT_ADDRESS: &str = ":client-address";

impl Needs {
    /// Also the header `name`.
    pub fn header(mut self, name: &str) -> Self {
        self.headers.push(name.to_owned());
        self
    }

    /// Also the cookie `name`.
    pub fn cookie(mut self, name: &str) -> Self {
        self.cookies.push(name.to_owned());
        self
    }

    /// Also the query parameter `name` (its first value, percent-decoded;
    /// read it with [`Request::query`]).
    pub fn query(mut self, name: &str) -> Self {
        self.headers.push(format!("?{name}"));
        self
    }

    /// Also the client's address (read it with [`Request::client_address`]).
    pub fn client_address(mut self) -> Self {
        self.headers.push(CLIENT_ADDRESS.to_owned());
        self
    }
}

/// The service's pools, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pools(Vec<String>);

/// A handle to one of the service's pools, from [`Pools::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool(u32);

impl Pools {
    /// The pools, in the order the host gave them.
    pub fn new(names: Vec<String>) -> Self {
        Pools(names)
    }

    /// The pool called `name`; the error lists the service's pools.
    pub fn get(&self, name: &str) -> Result<Pool, String> {
        match self.0.iter().position(|n| n == name) {
            Some(i) => Ok(Pool(i as u32)),
            None => Err(format!("no pool named `{name}`: the service has {}", self.0.join(", "))),
        }
    }

    /// The name of `pool`.
    pub fn name(&self, pool: Pool) -> Option<&str> {
        self.0.get(pool.0 as usize).map(String::as_str)
    }

    /// Every pool name.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl Pool {
    /// The pool's index in the host's list.
    pub fn index(self) -> u32 {
        self.0
    }

    /// A pool by index. Normally handles come from [`Pools::get`]; an index
    /// outside the service's pools is a fault the host contains (the request
    /// falls through to the weights).
    pub fn from_index(index: u32) -> Self {
        Pool(index)
    }
}
