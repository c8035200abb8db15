//! The handshake as a sans-I/O state machine: fixed newstyle, server side.
//!
//! ```text
//!   new() ── greeting queued
//!     │
//!     v
//!   ExpectClientFlags ──bad flags──> Failed (hard disconnect)
//!     │ 4 bytes
//!     v
//!   ExpectOption ──┬─ LIST, INFO, STRUCTURED_REPLY, unknown, refused GO ─┐
//!     ^            │                                                     │
//!     └────────────┼─────────────── replies queued ──────────────────────┘
//!                  ├─ GO accepted, EXPORT_NAME ──> Done(Outcome::Go)
//!                  ├─ ABORT ──> Done(Outcome::Abort)
//!                  └─ bad magic, oversized option, EXPORT_NAME refused,
//!                     option from a non-fixed client ──> Failed
//! ```
//!
//! The driver feeds whatever the socket delivered to
//! [`Negotiation::handle_input`] (which says how much it consumed),
//! writes what [`Negotiation::poll_transmit`] hands out, and stops when
//! [`Negotiation::outcome`] returns something or an error comes back.
//! Exports are looked up through a [`Catalog`] at the moment an option
//! names them, so an export added or removed at runtime is seen by the
//! next option.
//!
//! # What is offered
//!
//! - `NBD_OPT_GO` / `NBD_OPT_INFO`: `NBD_INFO_EXPORT` and
//!   `NBD_INFO_BLOCK_SIZE` always (block sizes are sent unasked: clients
//!   ignore info they do not understand), `NBD_INFO_NAME` and
//!   `NBD_INFO_DESCRIPTION` when asked;
//! - `NBD_OPT_LIST`, `NBD_OPT_ABORT`, `NBD_OPT_EXPORT_NAME`,
//!   `NBD_OPT_STRUCTURED_REPLY`;
//! - anything else (`STARTTLS`, metadata contexts, extended headers) gets
//!   `NBD_REP_ERR_UNSUP`, and negotiation goes on.
//!
//! An export that exists but cannot be used yet (the device has no
//! geometry: no path claimed) is refused with `NBD_REP_ERR_UNKNOWN` ("the
//! requested export is not available"; the spec has no separate
//! "unavailable" reply) and a message saying why.
//!
//! # Block size constraints
//!
//! The server advertises minimum = the logical block, preferred = the
//! physical block (at least 512 and the minimum, a power of two), maximum
//! = the device's transfer limit capped by the server's payload limit
//! ([`NegotiationConfig::max_payload`]). Unaligned requests are refused
//! with `EINVAL` rather than served by read-modify-write: the device
//! addresses whole blocks, and a read-modify-write racing another write
//! to the same block would lose data unless every write were serialised.
//! The spec allows this for clients that did not ask for the constraints
//! ("MUST cleanly error commands that fall outside the constraints").
//! Such clients are held to the minimum and to the server's payload limit
//! (at least 32 MiB, the spec's default), not to the device's smaller
//! transfer limit: they were never told about it, and the device splits
//! long requests itself.

use crate::consts::*;
use crate::handshake::*;
use crate::transmission::ExportParams;
use mpio_mpath::Geometry;

/// Limits of the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationConfig {
    /// Longest option payload accepted; longer ones end the connection.
    pub max_option_len: u32,
    /// Largest read or write payload the server accepts: the cap on the
    /// advertised maximum block size. At least 32 MiB is advisable, the
    /// payload clients may send when no constraints were negotiated.
    pub max_payload: u32,
}

impl Default for NegotiationConfig {
    fn default() -> Self {
        NegotiationConfig { max_option_len: DEFAULT_MAX_OPTION_LEN, max_payload: DEFAULT_MAX_PAYLOAD }
    }
}

/// Default [`NegotiationConfig::max_payload`]: 32 MiB, the spec's default
/// maximum payload.
pub const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;

/// Handshake flags this server offers.
pub const HANDSHAKE_FLAGS: u16 = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;

/// An export as a [`Catalog`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Canonical name (sent as `NBD_INFO_NAME`).
    pub name: String,
    /// For humans (`NBD_OPT_LIST`, `NBD_INFO_DESCRIPTION`); may be empty.
    pub description: String,
    /// The device's geometry now.
    pub geometry: Geometry,
}

/// Where the negotiation finds exports.
pub trait Catalog {
    /// What the driver needs to serve an export (a backend handle).
    type Export;

    /// The export a client named (`""` is the default export), or why not:
    /// the message goes to the client with `NBD_REP_ERR_UNKNOWN`.
    fn lookup(&self, name: &str) -> Result<(Self::Export, ExportInfo), String>;

    /// `(name, description)` of every export, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<(String, String)>;
}

/// What the client and server agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed<E> {
    /// The export handle from the catalog.
    pub export: E,
    /// Its canonical name.
    pub name: String,
    /// What requests are held to.
    pub params: ExportParams,
}

/// How negotiation ended, short of an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<E> {
    /// Transmission begins (after `NBD_OPT_GO`'s `NBD_REP_ACK`, or the
    /// `NBD_OPT_EXPORT_NAME` reply), once the queued output is written.
    Go(Agreed<E>),
    /// The client sent `NBD_OPT_ABORT`; write the queued `NBD_REP_ACK`,
    /// then close.
    Abort,
}

/// Why negotiation failed; each one is a hard disconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The byte stream broke the protocol (bad magic, bad client flags,
    /// oversized option).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A client that did not set `NBD_FLAG_C_FIXED_NEWSTYLE` sent an option
    /// other than `NBD_OPT_EXPORT_NAME` (the only one plain newstyle has).
    #[error("option {option} from a client that did not negotiate fixed newstyle")]
    NotFixedNewstyle {
        /// The option code.
        option: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named an export that cannot be served; the
    /// option has no error reply, so the spec requires a disconnect.
    #[error("NBD_OPT_EXPORT_NAME {name:?} refused: {reason}")]
    ExportNameRefused {
        /// The name asked for.
        name: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
enum State {
    ExpectClientFlags,
    ExpectOption { client: ClientFlags },
    Done,
    Failed(NegotiationError),
}

/// The server side of one connection's handshake.
///
/// Methods, in the quinn-proto manner: [`Negotiation::handle_input`] for
/// bytes in, [`Negotiation::poll_transmit`] for bytes out,
/// [`Negotiation::outcome`] for the result, [`Negotiation::shutdown`] as
/// the one command.
#[derive(Debug)]
pub struct Negotiation<E> {
    config: NegotiationConfig,
    state: State,
    out: Vec<u8>,
    structured: bool,
    shutting_down: bool,
    outcome: Option<Outcome<E>>,
}

impl<E> Negotiation<E> {
    /// A new handshake; the greeting is queued for transmission.
    pub fn new(config: NegotiationConfig) -> Self {
        let mut out = Vec::with_capacity(256);
        encode_greeting(&mut out, HANDSHAKE_FLAGS);
        Negotiation {
            config,
            state: State::ExpectClientFlags,
            out,
            structured: false,
            shutting_down: false,
            outcome: None,
        }
    }

    /// Appends the bytes to send to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// The result, once negotiation is over (taken once).
    pub fn outcome(&mut self) -> Option<Outcome<E>> {
        self.outcome.take()
    }

    /// Whether negotiation is over (successfully).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The server is stopping: every further option but `NBD_OPT_ABORT` is
    /// answered with `NBD_REP_ERR_SHUTDOWN`, which tells the client to
    /// leave.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Consumes complete messages from `buf` and returns how many bytes
    /// were used; the rest must be offered again with more data appended.
    ///
    /// Stops at the end of negotiation: bytes after the final option
    /// belong to the transmission phase. An error is sticky.
    pub fn handle_input<C>(&mut self, buf: &[u8], catalog: &C) -> Result<usize, NegotiationError>
    where
        C: Catalog<Export = E>,
    {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let step = match &self.state {
                State::Done => return Ok(used),
                State::Failed(e) => return Err(e.clone()),
                State::ExpectClientFlags => self.on_client_flags(rest),
                State::ExpectOption { client } => {
                    let client = *client;
                    self.on_option(rest, client, catalog)
                }
            };
            match step {
                Ok(Some(n)) => used += n,
                Ok(None) => return Ok(used),
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    return Err(e);
                }
            }
        }
    }

    fn on_client_flags(&mut self, buf: &[u8]) -> Result<Option<usize>, NegotiationError> {
        let Some((client, n)) = decode_client_flags(buf, HANDSHAKE_FLAGS)? else {
            return Ok(None);
        };
        self.state = State::ExpectOption { client };
        Ok(Some(n))
    }

    fn on_option<C>(&mut self, buf: &[u8], client: ClientFlags, catalog: &C) -> Result<Option<usize>, NegotiationError>
    where
        C: Catalog<Export = E>,
    {
        let Some((raw, n)) = decode_option(buf, self.config.max_option_len)? else {
            return Ok(None);
        };
        let code = raw.code;
        if !client.fixed_newstyle && code != NBD_OPT_EXPORT_NAME {
            return Err(NegotiationError::NotFixedNewstyle { option: code });
        }
        let opt = match parse_option(raw) {
            Ok(opt) => opt,
            Err(e) if code == NBD_OPT_EXPORT_NAME => {
                return Err(NegotiationError::ExportNameRefused { name: String::new(), reason: e.to_string() });
            }
            Err(e) => {
                encode_rep_error(&mut self.out, code, e.reply_type(), &e.to_string());
                return Ok(Some(n));
            }
        };
        if self.shutting_down && opt != ClientOption::Abort {
            if let ClientOption::ExportName(name) = opt {
                return Err(NegotiationError::ExportNameRefused {
                    name: name.into(),
                    reason: "the server is shutting down".into(),
                });
            }
            encode_rep_error(&mut self.out, code, NBD_REP_ERR_SHUTDOWN, "the server is shutting down");
            return Ok(Some(n));
        }
        match opt {
            ClientOption::Abort => {
                encode_rep_ack(&mut self.out, code);
                self.finish(Outcome::Abort);
            }
            ClientOption::List => {
                for (name, description) in catalog.list() {
                    encode_rep_server(&mut self.out, &name, &description);
                }
                encode_rep_ack(&mut self.out, code);
            }
            ClientOption::StructuredReply => {
                self.structured = true;
                encode_rep_ack(&mut self.out, code);
            }
            ClientOption::StartTls => {
                encode_rep_error(&mut self.out, code, NBD_REP_ERR_UNSUP, "this server does not support TLS");
            }
            ClientOption::Unknown(_) => {
                encode_rep_error(&mut self.out, code, NBD_REP_ERR_UNSUP, &format!("option {code} is not supported"));
            }
            ClientOption::Info(req) => {
                self.on_info(code, &req, catalog);
            }
            ClientOption::Go(req) => {
                if let Some(agreed) = self.on_info(code, &req, catalog) {
                    self.finish(Outcome::Go(agreed));
                }
            }
            ClientOption::ExportName(name) => {
                let (export, info) = catalog
                    .lookup(name)
                    .map_err(|reason| NegotiationError::ExportNameRefused { name: name.into(), reason })?;
                let params = export_params(&info.geometry, self.structured, self.config.max_payload, false)
                    .map_err(|reason| NegotiationError::ExportNameRefused { name: name.into(), reason })?;
                encode_export_name_reply(&mut self.out, params.size, params.transmission_flags, client.no_zeroes);
                self.finish(Outcome::Go(Agreed { export, name: info.name, params }));
            }
        }
        Ok(Some(n))
    }

    /// Answers `NBD_OPT_INFO` / `NBD_OPT_GO`; returns what was agreed
    /// when the export can be served.
    fn on_info<C>(&mut self, code: u32, req: &InfoRequest<'_>, catalog: &C) -> Option<Agreed<E>>
    where
        C: Catalog<Export = E>,
    {
        let found = catalog.lookup(req.name).and_then(|(export, info)| {
            let wants_sizes = req.wants(NBD_INFO_BLOCK_SIZE);
            let params = export_params(&info.geometry, self.structured, self.config.max_payload, wants_sizes)?;
            let advertised = advertised_block_sizes(&info.geometry, self.config.max_payload)?;
            Ok((export, info, params, advertised))
        });
        let (export, info, params, advertised) = match found {
            Ok(f) => f,
            Err(message) => {
                encode_rep_error(&mut self.out, code, NBD_REP_ERR_UNKNOWN, &message);
                return None;
            }
        };
        encode_rep_info_export(&mut self.out, code, params.size, params.transmission_flags);
        encode_rep_info_block_size(&mut self.out, code, advertised);
        if req.wants(NBD_INFO_NAME) {
            encode_rep_info_name(&mut self.out, code, &info.name);
        }
        if req.wants(NBD_INFO_DESCRIPTION) && !info.description.is_empty() {
            encode_rep_info_description(&mut self.out, code, &info.description);
        }
        encode_rep_ack(&mut self.out, code);
        Some(Agreed { export, name: info.name, params })
    }

    fn finish(&mut self, outcome: Outcome<E>) {
        self.state = State::Done;
        self.outcome = Some(outcome);
    }
}

/// Transmission flags for an export: `HAS_FLAGS`, `SEND_FLUSH`,
/// `SEND_FUA` always; `SEND_TRIM`, `SEND_WRITE_ZEROES`, `READ_ONLY`,
/// `CAN_MULTI_CONN` as the geometry says; `SEND_DF` with structured
/// replies (every read is answered with one data chunk anyway).
pub fn transmission_flags(g: &Geometry, structured: bool) -> u16 {
    let mut f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    if g.read_only {
        f |= NBD_FLAG_READ_ONLY;
    }
    if g.discard.is_some() {
        f |= NBD_FLAG_SEND_TRIM;
    }
    if g.write_zeroes {
        f |= NBD_FLAG_SEND_WRITE_ZEROES;
    }
    if g.shared_flush {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    if structured {
        f |= NBD_FLAG_SEND_DF;
    }
    f
}

/// The block size constraints advertised for `g` (see the module docs),
/// or why the geometry cannot be exported.
pub fn advertised_block_sizes(g: &Geometry, max_payload: u32) -> Result<BlockSizes, String> {
    let minimum = g.logical_block;
    if !minimum.is_power_of_two() || minimum > 65_536 {
        return Err(format!(
            "the device's {minimum}-byte logical block cannot be exported over NBD (needs a power of two up to 64 KiB)"
        ));
    }
    if !g.capacity.is_multiple_of(u64::from(minimum)) {
        return Err(format!("the device's size {} is not a multiple of its {minimum}-byte block", g.capacity));
    }
    let preferred = g.physical_block.max(minimum).max(512).checked_next_power_of_two().unwrap_or(minimum);
    let cap = max_payload.max(preferred);
    let maximum = g.max_transfer.map_or(cap, |m| m.clamp(preferred, cap));
    // A whole number of blocks (preferred is a multiple of minimum, so
    // this stays at least preferred).
    let maximum = maximum - maximum % minimum;
    Ok(BlockSizes { minimum, preferred, maximum })
}

/// What requests on `g` are held to: the advertised constraints when the
/// client asked for them, else the minimum and the server's own payload
/// limit.
pub fn export_params(
    g: &Geometry,
    structured: bool,
    max_payload: u32,
    agreed_sizes: bool,
) -> Result<ExportParams, String> {
    let advertised = advertised_block_sizes(g, max_payload)?;
    let block = if agreed_sizes {
        advertised
    } else {
        let cap = max_payload.max(advertised.preferred);
        BlockSizes { maximum: cap - cap % advertised.minimum, ..advertised }
    };
    Ok(ExportParams { size: g.capacity, transmission_flags: transmission_flags(g, structured), block, structured })
}
