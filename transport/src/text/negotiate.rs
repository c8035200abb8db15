//! Operational parameter negotiation, initiator side (RFC 7143 sections 6.2,
//! 6.3 and 13).
//!
//! RFC 7143 section 6.2 gives the shape of every exchange:
//!
//! ```text
//!    Originator-> <key>=<valuex>
//!    Responder-> <key>=<valuey>|NotUnderstood|Irrelevant|Reject
//! ```
//!
//! We originate our offers in the first Login Request of the operational
//! stage ([`Negotiator::next_request`]); the target answers them, and may
//! originate keys of its own, which we answer in the next request. Declarative
//! keys (MaxRecvDataSegmentLength, TargetAlias, ...) need no answer. The login
//! state machine feeds each complete Login Response (after C-bit accumulation)
//! to [`Negotiator::handle_response`], sends what `next_request` returns, may
//! set the T bit once [`Negotiator::is_settled`], and calls
//! [`Negotiator::finish`] when the target moves to Full Feature Phase.
//!
//! Errors are sticky, as in rustls: after a failure every call returns the
//! same error.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::collections::HashSet;

use super::codec::KeyValue;
use super::keys::{
    ConnectionParams, DATA_DIGEST, DATA_PDU_IN_ORDER, DATA_SEQUENCE_IN_ORDER, Digest, DigestPref, HEADER_DIGEST, Key,
    MAX_DATA_LENGTH, MAX_RECV_DATA_SEGMENT_LENGTH, Negotiated, NegotiationScope, OperationalOffer, Rule, SessionParams,
    TARGET_ADDRESS, TargetDeclarations,
};
use super::value::{self, SpecialValue};

/// The iSCSIProtocolLevel of RFC 7143 (section 13.24: "The
/// iSCSIProtocolLevel associated with this document is "1"").
const PROTOCOL_LEVEL: u64 = 1;

/// What we offered for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ours {
    List(DigestPref),
    Number(u64),
    Bool(bool),
}

#[derive(Clone, Debug)]
struct Offered {
    key: Key,
    ours: Ours,
    answered: bool,
    /// RFC 7143 section 6.2.2: answers are optional when our value alone
    /// decides a boolean (AND with No, OR with Yes).
    reply_required: bool,
}

impl Offered {
    fn wire_value(&self) -> String {
        match self.ours {
            Ours::List(pref) => pref.offer().to_owned(),
            Ours::Number(n) => value::format_number(n),
            Ours::Bool(b) => value::format_bool(b).to_owned(),
        }
    }
}

/// The initiator's side of one operational negotiation (one connection's
/// login, operational stage).
#[derive(Clone, Debug)]
pub struct Negotiator {
    scope: NegotiationScope,
    offer: OperationalOffer,
    offers_sent: bool,
    offered: Vec<Offered>,
    /// Our answers to keys the target originated, not yet sent.
    answers: Vec<KeyValue>,
    /// Keys the target has sent during this login.
    seen: HashSet<String>,
    /// Keys the target originated and we answered.
    responded: HashSet<String>,
    session: SessionParams,
    connection: ConnectionParams,
    target: TargetDeclarations,
    first_burst_irrelevant: bool,
    error: Option<NegotiationError>,
}

impl Negotiator {
    /// Prepares the offers for `scope`. Fails if `offer` breaks an RFC 7143
    /// section 13 range or rule ([`OperationalOffer::validate`]).
    pub fn new(offer: &OperationalOffer, scope: NegotiationScope) -> Result<Negotiator, NegotiationError> {
        offer.validate()?;
        let mut offered = vec![
            Offered {
                key: Key::HeaderDigest,
                ours: Ours::List(offer.header_digest),
                answered: false,
                reply_required: true,
            },
            Offered {
                key: Key::DataDigest,
                ours: Ours::List(offer.data_digest),
                answered: false,
                reply_required: true,
            },
        ];
        if scope == NegotiationScope::LeadingConnection {
            let num = |key, n: u64| Offered { key, ours: Ours::Number(n), answered: false, reply_required: true };
            // RFC 7143 section 6.2.2: "the two cases in which answers are
            // OPTIONAL are: - The Boolean function is "AND" and the value "No"
            // is received. ... - The Boolean function is "OR" and the value
            // "Yes" is received."
            let boolean = |key: Key, b: bool| Offered {
                key,
                ours: Ours::Bool(b),
                answered: false,
                reply_required: if key.rule() == Rule::And { b } else { !b },
            };
            offered.extend([
                num(Key::MaxConnections, u64::from(offer.max_connections)),
                boolean(Key::InitialR2T, offer.initial_r2t),
                boolean(Key::ImmediateData, offer.immediate_data),
                num(Key::MaxBurstLength, u64::from(offer.max_burst_length)),
                num(Key::FirstBurstLength, u64::from(offer.first_burst_length)),
                num(Key::DefaultTime2Wait, u64::from(offer.default_time2wait)),
                num(Key::DefaultTime2Retain, u64::from(offer.default_time2retain)),
                num(Key::MaxOutstandingR2T, u64::from(offer.max_outstanding_r2t)),
                boolean(Key::DataPduInOrder, true),
                boolean(Key::DataSequenceInOrder, true),
                num(Key::ErrorRecoveryLevel, u64::from(offer.error_recovery_level)),
            ]);
        }
        let mut session = SessionParams::default();
        if scope == NegotiationScope::Discovery {
            // RFC 7143 section 13.21: "The Discovery session implies
            // MaxConnections = 1 and overrides both the default and an
            // explicit setting."
            session.max_connections = 1;
        }
        let connection = ConnectionParams {
            max_recv_data_segment_length: offer.max_recv_data_segment_length,
            ..ConnectionParams::default()
        };
        let mut negotiator = Negotiator {
            scope,
            offer: offer.clone(),
            offers_sent: false,
            offered,
            answers: Vec::new(),
            seen: HashSet::new(),
            responded: HashSet::new(),
            session,
            connection,
            target: TargetDeclarations::default(),
            first_burst_irrelevant: false,
            error: None,
        };
        // Where our value alone decides a boolean, that value is the outcome
        // whether or not the target answers ("The outcome of the negotiation
        // is "No"" for AND, "Yes" for OR).
        let decided: Vec<(Key, bool)> = negotiator
            .offered
            .iter()
            .filter_map(|o| match o.ours {
                Ours::Bool(b) if !o.reply_required => Some((o.key, b)),
                _ => None,
            })
            .collect();
        for (key, b) in decided {
            negotiator.set_bool(key, b);
        }
        Ok(negotiator)
    }

    /// The scope this negotiator was built for.
    pub fn scope(&self) -> NegotiationScope {
        self.scope
    }

    /// Pairs for the next Login Request: our offers (and our
    /// MaxRecvDataSegmentLength declaration) the first time, afterwards our
    /// answers to the keys the target originated. Empty when there is nothing
    /// to say or after an error.
    pub fn next_request(&mut self) -> Vec<KeyValue> {
        if self.error.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.offers_sent {
            self.offers_sent = true;
            out.extend(self.offered.iter().map(|o| KeyValue::new(o.key.name(), o.wire_value())));
            // RFC 7143 section 13.12: "The initiator or target declares the
            // maximum data segment length in bytes it can receive in an
            // iSCSI PDU."
            out.push(KeyValue::new(
                MAX_RECV_DATA_SEGMENT_LENGTH,
                value::format_number(u64::from(self.offer.max_recv_data_segment_length)),
            ));
        }
        out.append(&mut self.answers);
        out
    }

    /// Feeds the pairs of one complete Login Response (after C-bit
    /// accumulation).
    pub fn handle_response(&mut self, pairs: &[KeyValue]) -> Result<(), NegotiationError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        for pair in pairs {
            if let Err(e) = self.handle_pair(pair) {
                self.error = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether all our offers are answered (or need no answer) and none of
    /// our answers waits to be sent: the initiator may set the T bit.
    pub fn is_settled(&self) -> bool {
        self.error.is_none()
            && self.offers_sent
            && self.answers.is_empty()
            && self.offered.iter().all(|o| o.answered || !o.reply_required)
    }

    /// The negotiated values, once the target has moved to Full Feature
    /// Phase. Fails on a sticky error, an unanswered offer, or a result mpio
    /// cannot work with.
    pub fn finish(self) -> Result<Negotiated, NegotiationError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some(o) = self.offered.iter().find(|o| o.reply_required && !o.answered) {
            return Err(NegotiationError::Unanswered { key: o.key.name(), offered: o.wire_value() });
        }
        if self.scope == NegotiationScope::LeadingConnection {
            // Seed events 61/62: "Target set DataPDUInOrder=No when Yes was
            // requested" fails the login; mpio only implements in-order data.
            if !self.session.data_pdu_in_order {
                return Err(NegotiationError::InOrderDataRefused { key: DATA_PDU_IN_ORDER });
            }
            if !self.session.data_sequence_in_order {
                return Err(NegotiationError::InOrderDataRefused { key: DATA_SEQUENCE_IN_ORDER });
            }
            // RFC 7143 section 13.14: "FirstBurstLength MUST NOT exceed
            // MaxBurstLength." (seed event 4). FirstBurstLength is
            // "Irrelevant when: ( InitialR2T=Yes and ImmediateData=No )".
            let irrelevant_by_rule = self.session.initial_r2t && !self.session.immediate_data;
            if !self.first_burst_irrelevant
                && !irrelevant_by_rule
                && self.session.first_burst_length > self.session.max_burst_length
            {
                return Err(NegotiationError::FirstBurstExceedsMaxBurst {
                    first_burst: self.session.first_burst_length,
                    max_burst: self.session.max_burst_length,
                });
            }
        }
        Ok(Negotiated { session: self.session, connection: self.connection, target: self.target })
    }

    fn handle_pair(&mut self, pair: &KeyValue) -> Result<(), NegotiationError> {
        // A target that objects to our answer to a key it originated
        // ("MaxConnections=Reject" after our reply; tgtd does this) has
        // nothing left to negotiate on that key: its value stays as it was.
        // Tolerated rather than treated as a redeclaration.
        if self.responded.contains(&pair.key) && SpecialValue::parse(&pair.value).is_some() {
            return Ok(());
        }
        // RFC 7143 section 6.3: "An attempt to renegotiate or redeclare
        // parameters not specifically allowed MUST be detected by the
        // initiator and target. ... if detected by the initiator, the
        // initiator MUST drop the connection."
        if pair.key != TARGET_ADDRESS && !self.seen.insert(pair.key.clone()) {
            return Err(NegotiationError::DuplicateKey { key: pair.key.clone() });
        }
        let Some(key) = Key::from_name(&pair.key) else {
            return self.answer_unknown(pair);
        };
        match self.offered.iter().position(|o| o.key == key) {
            Some(idx) => self.handle_answer(idx, pair),
            None => self.handle_target_key(key, pair),
        }
    }

    /// The target answers one of our offers.
    fn handle_answer(&mut self, idx: usize, pair: &KeyValue) -> Result<(), NegotiationError> {
        let Some(offered) = self.offered.get_mut(idx) else {
            return Ok(());
        };
        offered.answered = true;
        let (key, ours) = (offered.key, offered.ours);
        let value = pair.value.as_str();
        if let Some(special) = SpecialValue::parse(value) {
            return self.answered_special(key, ours, special);
        }
        match ours {
            Ours::List(pref) => {
                // RFC 7143 section 6.2.1: "The responding party MUST respond
                // with the same key and the first value that it supports
                // ... selected from the originator list." and "The selection
                // of a value not proposed MUST be handled as a protocol
                // error."
                match Digest::parse(value) {
                    Some(d) if pref.accepts(d) => {
                        self.set_digest(key, d);
                        Ok(())
                    }
                    Some(Digest::None) if pref.is_required() => Err(digest_refused(key, value)),
                    _ => Err(NegotiationError::NotOffered {
                        key: key.name(),
                        value: value.to_owned(),
                        offered: pref.offer(),
                    }),
                }
            }
            Ours::Number(offered) => {
                let n = self.parse_in_range(key, value)?;
                // RFC 7143 section 6.2.2: "The selection by the acceptor of a
                // value not admissible under the selection rules is
                // considered a protocol error." With Minimum the target may
                // only lower our value, with Maximum only raise it.
                match key.rule() {
                    Rule::Min if n > offered => Err(wrong_direction(key, value, offered, "Minimum", "at most")),
                    Rule::Max if n < offered => Err(wrong_direction(key, value, offered, "Maximum", "at least")),
                    _ => {
                        self.set_number(key, n);
                        Ok(())
                    }
                }
            }
            Ours::Bool(offered) => {
                let b = value::parse_bool(value).map_err(|e| invalid_value(key.name(), value, &e.to_string()))?;
                match (key.rule(), offered, b) {
                    // OR with our Yes can only be Yes; for the data ordering
                    // keys this is also seed events 61/62.
                    (Rule::Or, true, false) if matches!(key, Key::DataPduInOrder | Key::DataSequenceInOrder) => {
                        Err(NegotiationError::InOrderDataRefused { key: key.name() })
                    }
                    (Rule::Or, true, false) => Err(contradiction(key, value, offered, "OR")),
                    // AND with our No can only be No.
                    (Rule::And, false, true) => Err(contradiction(key, value, offered, "AND")),
                    _ => {
                        self.set_bool(key, b);
                        Ok(())
                    }
                }
            }
        }
    }

    /// The target answered NotUnderstood, Irrelevant or Reject.
    ///
    /// RFC 7143 section 6.2: "If the acceptor sends "Reject" as an answer,
    /// the negotiated key is left at its current value (or default if no
    /// value was set)." We treat Irrelevant and NotUnderstood the same way,
    /// unless the key is one we require (a mandatory CRC32C digest).
    fn answered_special(&mut self, key: Key, ours: Ours, special: SpecialValue) -> Result<(), NegotiationError> {
        if let Ours::List(pref) = ours
            && pref.is_required()
        {
            return Err(digest_refused(key, special.as_str()));
        }
        if key == Key::FirstBurstLength && special == SpecialValue::Irrelevant {
            self.first_burst_irrelevant = true;
        }
        if let Ours::Bool(_) = ours {
            // Undo the outcome preset in `new`: the key was not negotiated.
            // Every boolean key defaults to Yes (RFC 7143 sections 13.10,
            // 13.11, 13.18, 13.19).
            self.set_bool(key, true);
        }
        Ok(())
    }

    /// A key we did not offer: a declaration, or an offer of the target's
    /// that we answer in the next request.
    fn handle_target_key(&mut self, key: Key, pair: &KeyValue) -> Result<(), NegotiationError> {
        let value = pair.value.as_str();
        let rule = key.rule();
        if rule == Rule::Declarative {
            return self.declared(key, value);
        }
        match key {
            // RFC 7143 section 13.25: "When an IFMarker or OFMarker key is
            // received, a compliant iSCSI implementation SHOULD respond with
            // the constant "Reject" value." and "When an IFMarkInt or
            // OFMarkInt key is received, a compliant iSCSI implementation
            // MUST respond with the constant "Reject" value."
            Key::Marker | Key::MarkInt => {
                self.answer(pair, SpecialValue::Reject.as_str());
                return Ok(());
            }
            Key::Security => {
                return Err(NegotiationError::UnexpectedKey {
                    key: pair.key.clone(),
                    reason: "authentication keys belong to the security stage (RFC 7143 section 6.3.2)",
                });
            }
            _ => {}
        }
        // RFC 7143 section 6.2: "Violation of this rule is a protocol error
        // (in particular the use of "Reject", "Irrelevant", and
        // "NotUnderstood" as proposed values)."
        if SpecialValue::parse(value).is_some() {
            return Err(NegotiationError::ReservedValueProposed { key: pair.key.clone(), value: value.to_owned() });
        }
        // Session-wide ("LO") keys have no meaning on a connection that
        // joins an existing session, so the RFC has the target not send
        // them there. tgtd does anyway (MaxConnections), and rejects an
        // "Irrelevant" answer; echoing its value agrees without changing
        // anything, since the session keeps its leading connection's values.
        if self.scope == NegotiationScope::AddedConnection && key.leading_only() {
            self.answer(pair, &pair.value);
            return Ok(());
        }
        if self.scope == NegotiationScope::Discovery && key.irrelevant_in_discovery() {
            self.answer(pair, SpecialValue::Irrelevant.as_str());
            return Ok(());
        }
        match rule {
            Rule::List => return self.respond_list(key, pair),
            Rule::Min | Rule::Max => self.respond_number(key, rule, pair),
            Rule::And | Rule::Or => self.respond_bool(key, rule, pair),
            Rule::Declarative | Rule::Other => {}
        }
        Ok(())
    }

    /// We are the responder for a list key.
    fn respond_list(&mut self, key: Key, pair: &KeyValue) -> Result<(), NegotiationError> {
        let value = pair.value.as_str();
        if key == Key::TaskReporting {
            // RFC 7143 section 13.23: mpio implements the RFC3720 task
            // reporting semantics only.
            let answer = if value::split_list(value).any(|v| v == "RFC3720") { "RFC3720" } else { "Reject" };
            self.answer(pair, answer);
            return Ok(());
        }
        let pref = self.pref(key);
        // RFC 7143 section 6.2.1: "If an acceptor does not understand any
        // particular value in a list, it MUST ignore it. If an acceptor does
        // not support, does not understand, or is not allowed to use any of
        // the proposed options with a specific originator, it may use the
        // constant "Reject" or terminate the negotiation."
        match value::split_list(value).filter_map(Digest::parse).find(|d| pref.accepts(*d)) {
            Some(d) => {
                self.set_digest(key, d);
                self.answer(pair, d.as_str());
                Ok(())
            }
            // Answering Reject would leave the digest at None, which we
            // cannot accept: fail now with the useful message.
            None if pref.is_required() => Err(digest_refused(key, value)),
            None => {
                self.answer(pair, SpecialValue::Reject.as_str());
                Ok(())
            }
        }
    }

    /// We are the responder for a numerical key.
    fn respond_number(&mut self, key: Key, rule: Rule, pair: &KeyValue) {
        // RFC 7143 section 6.2.2: "Proposing a value not admissible (e.g.,
        // not within the specified bounds) MAY be answered with the constant
        // "Reject" or the acceptor MAY select an admissible value."
        let Ok(theirs) = self.parse_in_range(key, &pair.value) else {
            self.answer(pair, SpecialValue::Reject.as_str());
            return;
        };
        let ours = self.our_number(key);
        let result = if rule == Rule::Min { theirs.min(ours) } else { theirs.max(ours) };
        self.set_number(key, result);
        self.answer(pair, &value::format_number(result));
    }

    /// We are the responder for a boolean key.
    fn respond_bool(&mut self, key: Key, rule: Rule, pair: &KeyValue) {
        let Ok(theirs) = value::parse_bool(&pair.value) else {
            self.answer(pair, SpecialValue::Reject.as_str());
            return;
        };
        let ours = match key {
            Key::InitialR2T => self.offer.initial_r2t,
            Key::ImmediateData => self.offer.immediate_data,
            // DataPDUInOrder, DataSequenceInOrder: always Yes.
            _ => true,
        };
        // RFC 7143 section 6.2.2: "The rules for selecting the value with
        // which to answer are expressed as Boolean functions of the value
        // received and the value that the accepting party would have
        // selected if given the choice." We always answer, which the RFC
        // allows even where the answer is optional.
        let result = if rule == Rule::And { theirs && ours } else { theirs || ours };
        self.set_bool(key, result);
        self.answer(pair, value::format_bool(result));
    }

    /// A declarative key from the target.
    fn declared(&mut self, key: Key, value: &str) -> Result<(), NegotiationError> {
        match key {
            Key::MaxRecvDataSegmentLength => {
                let n = self.parse_in_range(key, value)?;
                self.connection.max_xmit_data_segment_length = u32::try_from(n).unwrap_or(MAX_DATA_LENGTH);
            }
            Key::TargetPortalGroupTag => {
                // RFC 7143 section 13.9: "TargetPortalGroupTag=<16-bit-binary-value>".
                let n = self.parse_in_range(key, value)?;
                self.target.target_portal_group_tag = u16::try_from(n).ok();
            }
            Key::TargetAlias => self.target.target_alias = Some(value.to_owned()),
            Key::TargetAddress => self.target.target_address.push(value.to_owned()),
            // Initiator-side or informational declarations: nothing to do.
            _ => {}
        }
        Ok(())
    }

    /// RFC 7143 section 6.2: "Any other key not understood by the target may
    /// be ignored by the target without affecting the basic function.
    /// However, the Text Response for a key that was not understood MUST be
    /// key=NotUnderstood." The same holds for us as responder, including
    /// private `X-` and public `X#` extension keys we do not implement.
    fn answer_unknown(&mut self, pair: &KeyValue) -> Result<(), NegotiationError> {
        if SpecialValue::parse(&pair.value).is_some() {
            return Err(NegotiationError::ReservedValueProposed { key: pair.key.clone(), value: pair.value.clone() });
        }
        self.answer(pair, SpecialValue::NotUnderstood.as_str());
        Ok(())
    }

    fn answer(&mut self, pair: &KeyValue, value: &str) {
        self.responded.insert(pair.key.clone());
        self.answers.push(KeyValue::new(pair.key.clone(), value));
    }

    fn parse_in_range(&self, key: Key, value: &str) -> Result<u64, NegotiationError> {
        let n = value::parse_number(value).map_err(|e| invalid_value(key.name(), value, &e.to_string()))?;
        let (min, max) = key.range().unwrap_or((0, u64::MAX));
        if n < min || n > max {
            return Err(NegotiationError::OutOfRange {
                key: key.name(),
                value: value.to_owned(),
                min,
                max,
                section: key.section(),
            });
        }
        Ok(n)
    }

    fn pref(&self, key: Key) -> DigestPref {
        if key == Key::HeaderDigest { self.offer.header_digest } else { self.offer.data_digest }
    }

    fn our_number(&self, key: Key) -> u64 {
        let o = &self.offer;
        match key {
            Key::MaxConnections => u64::from(o.max_connections),
            Key::MaxBurstLength => u64::from(o.max_burst_length),
            Key::FirstBurstLength => u64::from(o.first_burst_length),
            Key::DefaultTime2Wait => u64::from(o.default_time2wait),
            Key::DefaultTime2Retain => u64::from(o.default_time2retain),
            Key::MaxOutstandingR2T => u64::from(o.max_outstanding_r2t),
            Key::ErrorRecoveryLevel => u64::from(o.error_recovery_level),
            _ => PROTOCOL_LEVEL,
        }
    }

    fn set_digest(&mut self, key: Key, digest: Digest) {
        if key == Key::HeaderDigest {
            self.connection.header_digest = digest;
        } else {
            self.connection.data_digest = digest;
        }
    }

    /// Stores a value already checked against the key's range, so the
    /// conversions cannot fail; the fallbacks only keep the code panic-free.
    fn set_number(&mut self, key: Key, n: u64) {
        let s = &mut self.session;
        match key {
            Key::MaxConnections => s.max_connections = u16::try_from(n).unwrap_or(1),
            Key::MaxBurstLength => s.max_burst_length = u32::try_from(n).unwrap_or(MAX_DATA_LENGTH),
            Key::FirstBurstLength => s.first_burst_length = u32::try_from(n).unwrap_or(MAX_DATA_LENGTH),
            Key::DefaultTime2Wait => s.default_time2wait = u16::try_from(n).unwrap_or(3600),
            Key::DefaultTime2Retain => s.default_time2retain = u16::try_from(n).unwrap_or(0),
            Key::MaxOutstandingR2T => s.max_outstanding_r2t = u16::try_from(n).unwrap_or(1),
            Key::ErrorRecoveryLevel => s.error_recovery_level = u8::try_from(n).unwrap_or(0),
            _ => {}
        }
    }

    fn set_bool(&mut self, key: Key, b: bool) {
        let s = &mut self.session;
        match key {
            Key::InitialR2T => s.initial_r2t = b,
            Key::ImmediateData => s.immediate_data = b,
            Key::DataPduInOrder => s.data_pdu_in_order = b,
            Key::DataSequenceInOrder => s.data_sequence_in_order = b,
            _ => {}
        }
    }
}

fn digest_refused(key: Key, answered: &str) -> NegotiationError {
    let (key, setting) =
        if key == Key::HeaderDigest { (HEADER_DIGEST, "header_digest") } else { (DATA_DIGEST, "data_digest") };
    NegotiationError::DigestRefused { key, answered: answered.to_owned(), setting }
}

fn wrong_direction(
    key: Key,
    value: &str,
    offered: u64,
    function: &'static str,
    bound: &'static str,
) -> NegotiationError {
    NegotiationError::WrongDirection {
        key: key.name(),
        value: value.to_owned(),
        offered,
        function,
        bound,
        section: key.section(),
    }
}

fn contradiction(key: Key, value: &str, offered: bool, function: &'static str) -> NegotiationError {
    NegotiationError::BooleanContradiction {
        key: key.name(),
        value: value.to_owned(),
        offered: value::format_bool(offered),
        function,
    }
}

fn invalid_value(key: &str, value: &str, expected: &str) -> NegotiationError {
    NegotiationError::InvalidValue { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

/// An operational negotiation that cannot produce a working session.
///
/// Messages name the key, the value, what was expected and the likely fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// Our own configuration is outside the RFC ranges.
    #[error("invalid iSCSI setting {key} = {value}: {reason}")]
    InvalidOffer {
        /// The key.
        key: &'static str,
        /// The configured value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A digest we require was refused (seed events 18/19).
    #[error(
        "target refused {key}=CRC32C (it answered {answered}): set {setting} = none or enable digests on the target"
    )]
    DigestRefused {
        /// HeaderDigest or DataDigest.
        key: &'static str,
        /// What the target answered or offered instead.
        answered: String,
        /// Our configuration key.
        setting: &'static str,
    },
    /// The target chose a list value we did not offer.
    #[error(
        "target answered {key}={value:?}, which is not one of the values we offered ({offered}); \
         RFC 7143 section 6.2.1 makes this a protocol error: check the target's {key} setting"
    )]
    NotOffered {
        /// The key.
        key: &'static str,
        /// The target's choice.
        value: String,
        /// Our list.
        offered: &'static str,
    },
    /// A number outside the key's RFC 7143 range.
    #[error(
        "target sent {key}={value:?}, outside the range {min}..={max} of RFC 7143 section {section}: \
         the target is misconfigured or not compliant"
    )]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
        /// RFC 7143 section of the key.
        section: &'static str,
    },
    /// A numerical answer on the wrong side of our offer.
    #[error(
        "target answered {key}={value} to our offer of {offered}, but the result function is {function}: \
         the answer must be {bound} {offered} (RFC 7143 section {section}); the target is not compliant"
    )]
    WrongDirection {
        /// The key.
        key: &'static str,
        /// The target's answer.
        value: String,
        /// Our offer.
        offered: u64,
        /// Minimum or Maximum.
        function: &'static str,
        /// "at most" or "at least".
        bound: &'static str,
        /// RFC 7143 section of the key.
        section: &'static str,
    },
    /// A boolean answer the result function cannot produce.
    #[error(
        "target answered {key}={value} to our offer of {offered}, but the result function is {function}, \
         so the result can only be {offered} (RFC 7143 section 6.2.2); the target is not compliant"
    )]
    BooleanContradiction {
        /// The key.
        key: &'static str,
        /// The target's answer.
        value: String,
        /// Our offer.
        offered: &'static str,
        /// AND or OR.
        function: &'static str,
    },
    /// DataPDUInOrder=No or DataSequenceInOrder=No (seed events 61/62).
    #[error(
        "target requires {key}=No, but mpio only supports in-order data (seed events 61/62): \
         configure the target for {key}=Yes"
    )]
    InOrderDataRefused {
        /// DataPDUInOrder or DataSequenceInOrder.
        key: &'static str,
    },
    /// FirstBurstLength > MaxBurstLength after negotiation (seed event 4).
    #[error(
        "negotiated FirstBurstLength={first_burst} exceeds MaxBurstLength={max_burst} (RFC 7143 section 13.14, \
         seed event 4): set first_burst_length <= {max_burst} or raise MaxBurstLength on the target"
    )]
    FirstBurstExceedsMaxBurst {
        /// Negotiated FirstBurstLength.
        first_burst: u32,
        /// Negotiated MaxBurstLength.
        max_burst: u32,
    },
    /// A value that does not parse as its key requires.
    #[error("target sent {key}={value:?}: {expected}; the target is not compliant")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A key sent twice during login.
    #[error(
        "target sent {key} more than once during login, which RFC 7143 section 6.3 forbids: \
         the target is not compliant"
    )]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// NotUnderstood, Irrelevant or Reject used as an offer.
    #[error(
        "target proposed {key}={value}: that reserved constant may only answer a key (RFC 7143 section 6.2); \
         the target is not compliant"
    )]
    ReservedValueProposed {
        /// The key.
        key: String,
        /// The constant.
        value: String,
    },
    /// A key that has no place in operational negotiation.
    #[error("target sent {key} during operational negotiation: {reason}")]
    UnexpectedKey {
        /// The key.
        key: String,
        /// Why it is out of place.
        reason: &'static str,
    },
    /// The target moved on without answering an offer that needs an answer.
    #[error(
        "target never answered our {key}={offered}, which RFC 7143 section 6.2.2 requires: \
         the target is not compliant"
    )]
    Unanswered {
        /// The key.
        key: &'static str,
        /// Our offer.
        offered: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::keys::{self, MIN_DATA_LENGTH};
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<KeyValue> {
        list.iter().map(|(k, v)| kv(k, v)).collect()
    }

    fn negotiator(offer: &OperationalOffer, scope: NegotiationScope) -> Negotiator {
        let mut n = Negotiator::new(offer, scope).unwrap();
        n.next_request();
        n
    }

    fn leading() -> Negotiator {
        negotiator(&OperationalOffer::default(), NegotiationScope::LeadingConnection)
    }

    /// A compliant target that accepts every default offer (LIO-like).
    fn accept_all() -> Vec<KeyValue> {
        pairs(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxConnections", "1"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "20"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
            ("TargetPortalGroupTag", "1"),
        ])
    }

    /// `accept_all` with one answer replaced (or added).
    fn with(key: &str, value: &str) -> Vec<KeyValue> {
        let mut p = accept_all();
        match p.iter_mut().find(|p| p.key == key) {
            Some(pair) => pair.value = value.to_owned(),
            None => p.push(kv(key, value)),
        }
        p
    }

    fn negotiate(offer: &OperationalOffer, response: &[KeyValue]) -> Result<Negotiated, NegotiationError> {
        let mut n = negotiator(offer, NegotiationScope::LeadingConnection);
        n.handle_response(response)?;
        n.finish()
    }

    fn keys_of(p: &[KeyValue]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn leading_connection_offers_every_key_rfc7143_13() {
        let mut n = Negotiator::new(&OperationalOffer::default(), NegotiationScope::LeadingConnection).unwrap();
        let req = n.next_request();
        assert_eq!(
            req,
            pairs(&[
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxConnections", "1"),
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxBurstLength", "262144"),
                ("FirstBurstLength", "65536"),
                ("DefaultTime2Wait", "2"),
                ("DefaultTime2Retain", "20"),
                ("MaxOutstandingR2T", "1"),
                ("DataPDUInOrder", "Yes"),
                ("DataSequenceInOrder", "Yes"),
                ("ErrorRecoveryLevel", "0"),
                ("MaxRecvDataSegmentLength", "65536"),
            ])
        );
        // Afterwards only answers, and there are none yet.
        assert!(n.next_request().is_empty());
    }

    #[test]
    fn added_connection_and_discovery_offer_only_connection_keys_rfc7143_13() {
        let offer = OperationalOffer { header_digest: DigestPref::PreferCrc32c, ..OperationalOffer::default() };
        for scope in [NegotiationScope::AddedConnection, NegotiationScope::Discovery] {
            let mut n = Negotiator::new(&offer, scope).unwrap();
            let req = n.next_request();
            assert_eq!(keys_of(&req), ["HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength"], "{scope:?}");
            assert_eq!(req.first().unwrap().value, "CRC32C,None");
        }
    }

    #[test]
    fn typical_exchange_rfc7143_6_2() {
        let mut n = leading();
        assert!(!n.is_settled());
        n.handle_response(&with("TargetAlias", "disk one")).unwrap();
        assert!(n.is_settled());
        assert!(n.next_request().is_empty());
        let r = n.finish().unwrap();
        assert_eq!(r.session.max_burst_length, 262_144);
        assert!(!r.session.initial_r2t);
        assert!(r.session.immediate_data);
        assert_eq!(r.connection.max_recv_data_segment_length, 65_536);
        assert_eq!(r.connection.max_xmit_data_segment_length, 262_144);
        assert_eq!(r.target.target_alias.as_deref(), Some("disk one"));
        assert_eq!(r.target.target_portal_group_tag, Some(1));
    }

    #[test]
    fn answers_may_come_in_several_responses_rfc7143_6_2() {
        let mut n = leading();
        let all = accept_all();
        let (first, second) = all.split_at(5);
        n.handle_response(first).unwrap();
        assert!(!n.is_settled());
        n.handle_response(second).unwrap();
        assert!(n.is_settled());
        n.finish().unwrap();
    }

    #[test]
    fn list_answers_rfc7143_6_2_1() {
        use DigestPref as P;
        // (our preference, target's answer, expected digest or error fragment)
        let cases: &[(P, &str, Result<Digest, &str>)] = &[
            (P::None, "None", Ok(Digest::None)),
            (P::None, "CRC32C", Err("not one of the values we offered (None)")),
            (P::Crc32c, "CRC32C", Ok(Digest::Crc32c)),
            (
                P::Crc32c,
                "None",
                Err(
                    "target refused HeaderDigest=CRC32C (it answered None): set header_digest = none or enable digests on the target",
                ),
            ),
            (P::Crc32c, "Reject", Err("target refused HeaderDigest=CRC32C (it answered Reject)")),
            (P::Crc32c, "NotUnderstood", Err("target refused HeaderDigest=CRC32C (it answered NotUnderstood)")),
            (P::PreferCrc32c, "CRC32C", Ok(Digest::Crc32c)),
            (P::PreferCrc32c, "None", Ok(Digest::None)),
            (P::PreferCrc32c, "Reject", Ok(Digest::None)),
            (P::PreferNone, "CRC32C", Ok(Digest::Crc32c)),
            (P::PreferNone, "MD5", Err("not one of the values we offered (None,CRC32C)")),
            (P::PreferNone, "CRC32C,None", Err("not one of the values we offered")),
            (P::PreferNone, "crc32c", Err("not one of the values we offered")),
        ];
        for (pref, answer, want) in cases {
            let offer = OperationalOffer { header_digest: *pref, ..OperationalOffer::default() };
            let got = negotiate(&offer, &with("HeaderDigest", answer));
            match (want, got) {
                (Ok(d), Ok(r)) => assert_eq!(r.connection.header_digest, *d, "{pref:?} {answer}"),
                (Err(msg), Err(e)) => {
                    assert!(e.to_string().contains(msg), "{pref:?} {answer}: {e}")
                }
                (want, got) => panic!("{pref:?} {answer}: want {want:?}, got {got:?}"),
            }
        }
        let offer = OperationalOffer { data_digest: DigestPref::Crc32c, ..OperationalOffer::default() };
        let e = negotiate(&offer, &with("DataDigest", "None")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "target refused DataDigest=CRC32C (it answered None): set data_digest = none or enable digests on the target"
        );
    }

    #[test]
    fn numerical_answers_rfc7143_13() {
        // (key, answer, Ok(stored) or error fragment); offers are the defaults.
        type Get = fn(&SessionParams) -> u64;
        let cases: &[(&str, &str, Get, Result<u64, &str>)] = &[
            ("MaxBurstLength", "65536", |s| u64::from(s.max_burst_length), Ok(65_536)),
            ("MaxBurstLength", "0x40000", |s| u64::from(s.max_burst_length), Ok(262_144)),
            ("MaxBurstLength", "262145", |s| u64::from(s.max_burst_length), Err("must be at most 262144")),
            ("MaxBurstLength", "511", |s| u64::from(s.max_burst_length), Err("outside the range 512..=16777215")),
            ("MaxBurstLength", "lots", |s| u64::from(s.max_burst_length), Err("not a number")),
            ("FirstBurstLength", "512", |s| u64::from(s.first_burst_length), Ok(512)),
            ("FirstBurstLength", "65537", |s| u64::from(s.first_burst_length), Err("result function is Minimum")),
            ("MaxConnections", "0", |s| u64::from(s.max_connections), Err("outside the range 1..=65535")),
            ("MaxConnections", "2", |s| u64::from(s.max_connections), Err("must be at most 1")),
            ("DefaultTime2Retain", "0", |s| u64::from(s.default_time2retain), Ok(0)),
            ("DefaultTime2Retain", "21", |s| u64::from(s.default_time2retain), Err("Minimum")),
            ("DefaultTime2Retain", "3601", |s| u64::from(s.default_time2retain), Err("0..=3600")),
            ("MaxOutstandingR2T", "2", |s| u64::from(s.max_outstanding_r2t), Err("at most 1")),
            // Maximum: the target may only raise our value.
            ("DefaultTime2Wait", "10", |s| u64::from(s.default_time2wait), Ok(10)),
            ("DefaultTime2Wait", "1", |s| u64::from(s.default_time2wait), Err("result function is Maximum")),
            ("DefaultTime2Wait", "3601", |s| u64::from(s.default_time2wait), Err("0..=3600")),
            // ErrorRecoveryLevel: we offer the configured level and accept lower.
            ("ErrorRecoveryLevel", "0", |s| u64::from(s.error_recovery_level), Ok(0)),
            ("ErrorRecoveryLevel", "1", |s| u64::from(s.error_recovery_level), Err("at most 0")),
            ("ErrorRecoveryLevel", "3", |s| u64::from(s.error_recovery_level), Err("0..=2")),
        ];
        for (key, answer, get, want) in cases {
            let got = negotiate(&OperationalOffer::default(), &with(key, answer));
            match (want, got) {
                (Ok(v), Ok(r)) => assert_eq!(get(&r.session), *v, "{key}={answer}"),
                (Err(msg), Err(e)) => {
                    assert!(e.to_string().contains(msg), "{key}={answer}: {e}");
                    assert!(e.to_string().contains(key), "{key}={answer}: {e}");
                }
                (want, got) => panic!("{key}={answer}: want {want:?}, got {got:?}"),
            }
        }
        // A higher configured ERL negotiated down (RFC 7143 section 13.20).
        let offer = OperationalOffer { error_recovery_level: 2, ..OperationalOffer::default() };
        let r = negotiate(&offer, &with("ErrorRecoveryLevel", "1")).unwrap();
        assert_eq!(r.session.error_recovery_level, 1);
    }

    #[test]
    fn boolean_answers_rfc7143_6_2_2() {
        // (key, our offer, answer or None, Ok(result) or error fragment)
        type Case<'a> = (&'a str, bool, Option<&'a str>, Result<bool, &'a str>);
        let cases: &[Case<'_>] = &[
            // ImmediateData: AND.
            ("ImmediateData", true, Some("Yes"), Ok(true)),
            ("ImmediateData", true, Some("No"), Ok(false)),
            ("ImmediateData", true, None, Err("never answered our ImmediateData=Yes")),
            ("ImmediateData", false, None, Ok(false)),
            ("ImmediateData", false, Some("No"), Ok(false)),
            ("ImmediateData", false, Some("Yes"), Err("result function is AND")),
            ("ImmediateData", true, Some("yes"), Err("not a boolean")),
            // InitialR2T: OR.
            ("InitialR2T", false, Some("No"), Ok(false)),
            ("InitialR2T", false, Some("Yes"), Ok(true)),
            ("InitialR2T", false, None, Err("never answered our InitialR2T=No")),
            ("InitialR2T", true, None, Ok(true)),
            ("InitialR2T", true, Some("Yes"), Ok(true)),
            ("InitialR2T", true, Some("No"), Err("result function is OR")),
        ];
        for (key, ours, answer, want) in cases {
            let mut offer = OperationalOffer::default();
            if *key == "ImmediateData" {
                offer.immediate_data = *ours;
            } else {
                offer.initial_r2t = *ours;
            }
            let mut response = accept_all();
            response.retain(|p| p.key != *key);
            if let Some(a) = answer {
                response.push(kv(key, a));
            }
            let got = negotiate(&offer, &response)
                .map(|r| if *key == "ImmediateData" { r.session.immediate_data } else { r.session.initial_r2t });
            match (want, got) {
                (Ok(v), Ok(g)) => assert_eq!(g, *v, "{key} ours={ours} answer={answer:?}"),
                (Err(msg), Err(e)) => assert!(e.to_string().contains(msg), "{key} {answer:?}: {e}"),
                (want, got) => {
                    panic!("{key} ours={ours} answer={answer:?}: want {want:?}, got {got:?}")
                }
            }
        }
    }

    #[test]
    fn optional_answers_leave_the_negotiation_settled_rfc7143_6_2_2() {
        // DataPDUInOrder=Yes and DataSequenceInOrder=Yes are OR with Yes: no
        // answer needed.
        let mut n = leading();
        let mut response = accept_all();
        response.retain(|p| !p.key.ends_with("InOrder"));
        n.handle_response(&response).unwrap();
        assert!(n.is_settled());
        let r = n.finish().unwrap();
        assert!(r.session.data_pdu_in_order && r.session.data_sequence_in_order);
    }

    #[test]
    fn out_of_order_data_fails_the_login_seed_events_61_62() {
        for key in ["DataPDUInOrder", "DataSequenceInOrder"] {
            let e = negotiate(&OperationalOffer::default(), &with(key, "No")).unwrap_err();
            assert_eq!(
                e,
                NegotiationError::InOrderDataRefused {
                    key: if key == "DataPDUInOrder" { DATA_PDU_IN_ORDER } else { DATA_SEQUENCE_IN_ORDER }
                }
            );
            assert!(e.to_string().contains("only supports in-order data"), "{e}");
        }
    }

    #[test]
    fn first_burst_above_max_burst_fails_rfc7143_13_14_seed_event_4() {
        let mut response = with("MaxBurstLength", "16384");
        assert_eq!(
            negotiate(&OperationalOffer::default(), &response),
            Err(NegotiationError::FirstBurstExceedsMaxBurst { first_burst: 65_536, max_burst: 16_384 })
        );
        // Both lowered consistently: fine.
        response.retain(|p| p.key != "FirstBurstLength");
        response.push(kv("FirstBurstLength", "16384"));
        negotiate(&OperationalOffer::default(), &response).unwrap();
        // FirstBurstLength answered Irrelevant: not checked.
        let mut response = with("MaxBurstLength", "16384");
        response.retain(|p| p.key != "FirstBurstLength");
        response.push(kv("FirstBurstLength", "Irrelevant"));
        negotiate(&OperationalOffer::default(), &response).unwrap();
        // Irrelevant when InitialR2T=Yes and ImmediateData=No.
        let offer = OperationalOffer { initial_r2t: true, immediate_data: false, ..OperationalOffer::default() };
        let mut response = with("MaxBurstLength", "16384");
        response.retain(|p| p.key != "InitialR2T" && p.key != "ImmediateData");
        negotiate(&offer, &response).unwrap();
    }

    #[test]
    fn declarations_rfc7143_13_12_13_6_13_8_13_9() {
        // No MaxRecvDataSegmentLength from the target: the RFC default 8192.
        let mut response = accept_all();
        response.retain(|p| p.key != "MaxRecvDataSegmentLength");
        let r = negotiate(&OperationalOffer::default(), &response).unwrap();
        assert_eq!(r.connection.max_xmit_data_segment_length, 8192);
        assert_eq!(r.connection.max_recv_data_segment_length, 65_536);
        // The target declares its own value, independent of ours.
        let r = negotiate(&OperationalOffer::default(), &with("MaxRecvDataSegmentLength", "1048576")).unwrap();
        assert_eq!(r.connection.max_xmit_data_segment_length, 1_048_576);
        for bad in ["511", "16777216", "x"] {
            let e = negotiate(&OperationalOffer::default(), &with("MaxRecvDataSegmentLength", bad)).unwrap_err();
            assert!(e.to_string().contains("MaxRecvDataSegmentLength"), "{e}");
        }
        // TargetAddress may repeat (redirection); TargetPortalGroupTag is 16-bit.
        let mut response = accept_all();
        response.extend(pairs(&[("TargetAddress", "10.0.0.1:3260,1"), ("TargetAddress", "[2001:db8::1],2")]));
        let r = negotiate(&OperationalOffer::default(), &response).unwrap();
        assert_eq!(r.target.target_address, ["10.0.0.1:3260,1", "[2001:db8::1],2"]);
        assert!(negotiate(&OperationalOffer::default(), &with("TargetPortalGroupTag", "65536")).is_err());
        let r = negotiate(&OperationalOffer::default(), &with("TargetPortalGroupTag", "0x10")).unwrap();
        assert_eq!(r.target.target_portal_group_tag, Some(16));
        // Declarations need no answer.
        let mut n = leading();
        n.handle_response(&with("TargetAlias", "Reject")).unwrap();
        assert!(n.next_request().is_empty());
    }

    #[test]
    fn special_answers_keep_the_default_rfc7143_6_2() {
        let defaults = SessionParams::default();
        for special in ["NotUnderstood", "Irrelevant", "Reject"] {
            // InitialR2T default Yes, MaxConnections default 1, T2W default 2.
            let r = negotiate(&OperationalOffer::default(), &with("InitialR2T", special)).unwrap();
            assert_eq!(r.session.initial_r2t, defaults.initial_r2t, "{special}");
            let offer =
                OperationalOffer { default_time2wait: 5, max_burst_length: 65_536, ..OperationalOffer::default() };
            let mut response = with("DefaultTime2Wait", special);
            response.retain(|p| p.key != "MaxBurstLength");
            response.push(kv("MaxBurstLength", special));
            let r = negotiate(&offer, &response).unwrap();
            assert_eq!(r.session.default_time2wait, 2, "{special}");
            assert_eq!(r.session.max_burst_length, 262_144, "{special}");
            let r = negotiate(&OperationalOffer::default(), &with("DataPDUInOrder", special)).unwrap();
            assert!(r.session.data_pdu_in_order);
        }
    }

    #[test]
    fn target_originated_keys_are_answered_rfc7143_6_2() {
        let offer = OperationalOffer { max_burst_length: 65_536, ..OperationalOffer::default() };
        // Discovery: we offer only digests and MRDSL, so the target originates the rest.
        let mut n = negotiator(&offer, NegotiationScope::Discovery);
        n.handle_response(&pairs(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "60"),
            ("ErrorRecoveryLevel", "2"),
            ("MaxBurstLength", "1048576"),
            ("InitialR2T", "Yes"),
            ("X-com.example.magic", "1"),
            ("X#SomethingNew", "a"),
            ("FutureKey", "b"),
            ("OFMarker", "No"),
            ("IFMarkInt", "2048~8192"),
            ("DefaultTime2Waiting", "Yes"),
        ]))
        .unwrap();
        assert!(!n.is_settled(), "answers are pending");
        let answers = n.next_request();
        assert_eq!(
            answers,
            pairs(&[
                ("DefaultTime2Wait", "2"),        // Maximum(0, 2)
                ("DefaultTime2Retain", "20"),     // Minimum(60, 20)
                ("ErrorRecoveryLevel", "0"),      // Minimum(2, 0)
                ("MaxBurstLength", "Irrelevant"), // irrelevant in discovery
                ("InitialR2T", "Irrelevant"),
                ("X-com.example.magic", "NotUnderstood"),
                ("X#SomethingNew", "NotUnderstood"),
                ("FutureKey", "NotUnderstood"),
                ("OFMarker", "Reject"), // RFC 7143 section 13.25
                ("IFMarkInt", "Reject"),
                ("DefaultTime2Waiting", "NotUnderstood"),
            ])
        );
        assert!(n.is_settled());
        let r = n.finish().unwrap();
        assert_eq!((r.session.default_time2wait, r.session.default_time2retain), (2, 20));
        assert_eq!(r.session.max_connections, 1);
        assert_eq!(r.session.max_burst_length, 262_144, "irrelevant keys keep the default");
    }

    #[test]
    fn responder_applies_the_result_functions_rfc7143_6_2_2() {
        // AddedConnection offers only digests; session keys the target
        // originates there (tgtd sends MaxConnections) are echoed, and a
        // Reject of that echo is tolerated.
        let mut n = negotiator(&OperationalOffer::default(), NegotiationScope::AddedConnection);
        n.handle_response(&pairs(&[("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "2")]))
            .unwrap();
        assert_eq!(n.next_request(), pairs(&[("MaxConnections", "2")]));
        n.handle_response(&pairs(&[("MaxConnections", "Reject")])).unwrap();
        assert_eq!(n.finish().unwrap().session, SessionParams::default());

        // Keys we never offer, originated by the target on a leading
        // connection: we answer as responder.
        let offer = OperationalOffer::default();
        let cases: &[(&str, &str, &str)] = &[
            ("TaskReporting", "ResponseFence,RFC3720", "RFC3720"),
            ("TaskReporting", "FastAbort", "Reject"),
            ("iSCSIProtocolLevel", "2", "1"),
            ("iSCSIProtocolLevel", "0", "0"),
            ("iSCSIProtocolLevel", "32", "Reject"),
        ];
        for (key, value, answer) in cases {
            let mut n = negotiator(&offer, NegotiationScope::LeadingConnection);
            n.handle_response(&[kv(key, value)]).unwrap();
            assert_eq!(n.next_request(), [kv(key, answer)], "{key}={value}");
        }
    }

    #[test]
    fn responder_booleans_and_digests_rfc7143_6_2() {
        // We offer every digest and boolean key ourselves, so to exercise the
        // responder side the tests remove the key from our offers first.
        // (our preference, the target's offer, our answer, the result or None for an error)
        let cases: &[(DigestPref, &str, &str, Option<Digest>)] = &[
            (DigestPref::PreferNone, "CRC32C,None", "CRC32C", Some(Digest::Crc32c)),
            (DigestPref::None, "CRC32C,None", "None", Some(Digest::None)),
            (DigestPref::None, "CRC32C", "Reject", Some(Digest::None)),
            (DigestPref::Crc32c, "None,CRC32C", "CRC32C", Some(Digest::Crc32c)),
            (DigestPref::PreferCrc32c, "MD5,None", "None", Some(Digest::None)),
            (DigestPref::Crc32c, "None", "", None),
        ];
        for (pref, theirs, answer, want) in cases {
            let offer = OperationalOffer { header_digest: *pref, ..OperationalOffer::default() };
            // A negotiator that did not offer HeaderDigest, so the target's
            // HeaderDigest is an offer we must answer.
            let mut n = Negotiator::new(&offer, NegotiationScope::Discovery).unwrap();
            n.offered.retain(|o| o.key != Key::HeaderDigest);
            n.next_request();
            let r = n.handle_response(&[kv("HeaderDigest", theirs), kv("DataDigest", "None")]);
            match want {
                Some(d) => {
                    r.unwrap();
                    assert_eq!(n.next_request(), [kv("HeaderDigest", answer)], "{pref:?} {theirs}");
                    assert_eq!(n.finish().unwrap().connection.header_digest, *d);
                }
                None => {
                    let e = r.unwrap_err();
                    assert!(e.to_string().starts_with("target refused HeaderDigest=CRC32C"), "{e}");
                }
            }
        }
        // Booleans as responder: AND and OR with our preference.
        let offer = OperationalOffer { immediate_data: true, initial_r2t: false, ..OperationalOffer::default() };
        let cases: &[(&str, &str, &str)] = &[
            ("ImmediateData", "Yes", "Yes"),
            ("ImmediateData", "No", "No"),
            ("InitialR2T", "No", "No"),
            ("InitialR2T", "Yes", "Yes"),
            ("DataPDUInOrder", "No", "Yes"),
            ("ImmediateData", "maybe", "Reject"),
        ];
        for (key, theirs, answer) in cases {
            let mut n = Negotiator::new(&offer, NegotiationScope::LeadingConnection).unwrap();
            n.offered.retain(|o| o.key.name() != *key);
            n.next_request();
            n.handle_response(&[kv(key, theirs)]).unwrap();
            assert_eq!(n.next_request(), [kv(key, answer)], "{key}={theirs}");
        }
    }

    #[test]
    fn protocol_errors_rfc7143_6_2_and_6_3() {
        // Renegotiation.
        let mut response = accept_all();
        response.push(kv("ImmediateData", "Yes"));
        assert_eq!(
            negotiate(&OperationalOffer::default(), &response),
            Err(NegotiationError::DuplicateKey { key: "ImmediateData".into() })
        );
        // Duplicates across two responses too.
        let mut n = leading();
        n.handle_response(&accept_all()).unwrap();
        assert!(n.handle_response(&[kv("TargetAlias", "a"), kv("TargetAlias", "b")]).is_err());
        // Reserved constants as proposals.
        let mut n = leading();
        let e = n.handle_response(&[kv("X-vendor", "Reject")]).unwrap_err();
        assert!(matches!(e, NegotiationError::ReservedValueProposed { .. }), "{e}");
        let mut n = negotiator(&OperationalOffer::default(), NegotiationScope::Discovery);
        assert!(n.handle_response(&[kv("DefaultTime2Wait", "Irrelevant")]).is_err());
        // Security keys do not belong here.
        let mut n = leading();
        assert!(matches!(n.handle_response(&[kv("CHAP_A", "5")]), Err(NegotiationError::UnexpectedKey { .. })));
    }

    #[test]
    fn errors_are_sticky() {
        let mut n = leading();
        let e = n.handle_response(&with("MaxConnections", "9")).unwrap_err();
        assert_eq!(n.handle_response(&accept_all()), Err(e.clone()));
        assert!(n.next_request().is_empty());
        assert!(!n.is_settled());
        assert_eq!(n.finish(), Err(e));
    }

    #[test]
    fn unanswered_offers_fail_finish_rfc7143_6_2_2() {
        let mut n = leading();
        let mut response = accept_all();
        response.retain(|p| p.key != "MaxBurstLength");
        n.handle_response(&response).unwrap();
        assert!(!n.is_settled());
        assert_eq!(
            n.finish(),
            Err(NegotiationError::Unanswered { key: keys::MAX_BURST_LENGTH, offered: "262144".into() })
        );
        // Nothing sent at all.
        let n = Negotiator::new(&OperationalOffer::default(), NegotiationScope::Discovery).unwrap();
        assert!(!n.is_settled());
        assert!(n.finish().is_err());
    }

    #[test]
    fn invalid_offer_is_refused() {
        let offer = OperationalOffer { first_burst_length: 1 << 20, ..OperationalOffer::default() };
        let e = Negotiator::new(&offer, NegotiationScope::LeadingConnection).unwrap_err();
        assert!(e.to_string().contains("FirstBurstLength"), "{e}");
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..20_000_000).prop_map(|n| n.to_string()),
            Just("0".to_string()),
            Just("Yes".to_string()),
            Just("No".to_string()),
            Just("None".to_string()),
            Just("CRC32C".to_string()),
            Just("CRC32C,None".to_string()),
            Just("Reject".to_string()),
            Just("Irrelevant".to_string()),
            Just("NotUnderstood".to_string()),
            "[ -~]{0,12}",
        ]
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("HeaderDigest"),
            Just("DataDigest"),
            Just("MaxConnections"),
            Just("InitialR2T"),
            Just("ImmediateData"),
            Just("MaxRecvDataSegmentLength"),
            Just("MaxBurstLength"),
            Just("FirstBurstLength"),
            Just("DefaultTime2Wait"),
            Just("DefaultTime2Retain"),
            Just("MaxOutstandingR2T"),
            Just("DataPDUInOrder"),
            Just("DataSequenceInOrder"),
            Just("ErrorRecoveryLevel"),
            Just("TargetPortalGroupTag"),
            Just("TargetAlias"),
            Just("TargetAddress"),
            Just("TaskReporting"),
            Just("iSCSIProtocolLevel"),
            Just("OFMarker"),
            Just("X-foo"),
        ]
        .prop_map(str::to_owned)
    }

    fn scope_strategy() -> impl Strategy<Value = NegotiationScope> {
        prop_oneof![
            Just(NegotiationScope::LeadingConnection),
            Just(NegotiationScope::AddedConnection),
            Just(NegotiationScope::Discovery),
        ]
    }

    proptest! {
        #[test]
        fn results_stay_in_rfc_ranges_whatever_the_target_says(
            scope in scope_strategy(),
            responses in proptest::collection::vec(
                proptest::collection::vec((key_strategy(), value_strategy()), 0..20), 1..4),
            erl in 0u8..=2,
        ) {
            let offer = OperationalOffer { error_recovery_level: erl, header_digest: DigestPref::PreferCrc32c, ..OperationalOffer::default() };
            let mut n = Negotiator::new(&offer, scope).unwrap();
            n.next_request();
            for r in &responses {
                let pairs: Vec<KeyValue> = r.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
                let _ = n.handle_response(&pairs);
                let _ = n.next_request();
            }
            if let Ok(r) = n.finish() {
                let s = &r.session;
                let data = MIN_DATA_LENGTH..=MAX_DATA_LENGTH;
                prop_assert!(s.max_connections >= 1);
                prop_assert!(s.max_connections <= offer.max_connections.max(1));
                prop_assert!(data.contains(&s.max_burst_length) && s.max_burst_length <= offer.max_burst_length.max(262_144));
                prop_assert!(data.contains(&s.first_burst_length));
                prop_assert!(s.default_time2wait <= 3600 && s.default_time2retain <= 3600);
                prop_assert!(s.max_outstanding_r2t >= 1);
                prop_assert!(s.error_recovery_level <= erl);
                prop_assert!(s.data_pdu_in_order && s.data_sequence_in_order);
                prop_assert!(data.contains(&r.connection.max_xmit_data_segment_length));
                prop_assert_eq!(r.connection.max_recv_data_segment_length, offer.max_recv_data_segment_length);
                let first_burst_relevant = s.immediate_data || !s.initial_r2t;
                if scope == NegotiationScope::LeadingConnection && first_burst_relevant {
                    prop_assert!(s.first_burst_length <= s.max_burst_length || n_first_burst_irrelevant(&r));
                }
            }
        }

        #[test]
        fn handle_response_never_panics(
            scope in scope_strategy(),
            raw in proptest::collection::vec(("[ -~]{0,20}", "[ -~]{0,20}"), 0..30),
        ) {
            let mut n = Negotiator::new(&OperationalOffer::default(), scope).unwrap();
            n.next_request();
            let pairs: Vec<KeyValue> = raw.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let _ = n.handle_response(&pairs);
            let _ = n.next_request();
            let _ = n.is_settled();
            let _ = n.finish();
        }
    }

    /// FirstBurstLength answered Irrelevant keeps its default, which may
    /// exceed a lowered MaxBurstLength; that is allowed.
    fn n_first_burst_irrelevant(r: &Negotiated) -> bool {
        r.session.first_burst_length == SessionParams::default().first_burst_length
    }
}
