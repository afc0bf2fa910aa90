//! How a REST backend that is not sync-server pages, versions, conflicts, replays and keys
//! its records: [`RestPull`] (a [`PullMode::Rest`](crate::PullMode::Rest)) and
//! [`RestBackend`] (per model, in [`ModelConfig::backend`](crate::ModelConfig::backend)).
//!
//! Every option is checked when the manager is built
//! ([`SyncManagerBuilder::build`](crate::SyncManagerBuilder::build)): a configuration that
//! cannot work is an [`Error::Config`](crate::Error::Config) there, not a surprise at the
//! first sync.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use sync_protocol::{DELETED_KEY, UPDATED_AT_KEY, VERSION_KEY};

/// Where the value of a [`Since`] bound is written, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TimeFormat {
    /// As the records carry it (a number as its digits, a string as it is).
    #[default]
    AsReceived,
    /// RFC 3339 / ISO 8601 in UTC with milliseconds (`2026-01-01T00:00:00.000Z`); a number is
    /// read as milliseconds since the epoch.
    Iso8601,
    /// Milliseconds since the epoch; a timestamp is converted.
    EpochMillis,
    /// Seconds since the epoch; a timestamp is converted.
    EpochSeconds,
}

impl TimeFormat {
    /// `value` (a cursor value as text) in this format; `None` if it cannot be converted.
    pub fn render(self, value: &str) -> Option<String> {
        match self {
            TimeFormat::AsReceived => Some(value.to_owned()),
            TimeFormat::Iso8601 => {
                let at = parse_instant(value)?;
                Some(at.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
            TimeFormat::EpochMillis => Some(parse_instant(value)?.timestamp_millis().to_string()),
            TimeFormat::EpochSeconds => Some(parse_instant(value)?.timestamp().to_string()),
        }
    }

    /// Reads an instant written in this format (a number as this format's unit; text as
    /// RFC 3339).
    pub fn read(self, value: &Value) -> Option<DateTime<Utc>> {
        match value {
            Value::Number(n) => {
                let n = n.as_i64()?;
                match self {
                    TimeFormat::EpochSeconds => Utc.timestamp_opt(n, 0).single(),
                    _ => Utc.timestamp_millis_opt(n).single(),
                }
            }
            Value::String(s) => match self {
                TimeFormat::EpochSeconds => match s.trim().parse::<i64>() {
                    Ok(n) => Utc.timestamp_opt(n, 0).single(),
                    Err(_) => parse_instant(s),
                },
                _ => parse_instant(s),
            },
            // Parse Server's `{"__type": "Date", "iso": "..."}`.
            Value::Object(map) => map.get("iso").and_then(|v| self.read(v)),
            _ => None,
        }
    }
}

/// RFC 3339 text, or milliseconds since the epoch.
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Utc.timestamp_millis_opt(ms).single();
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The lower bound of an incremental pull: the largest value of a record field seen so far
/// (compared as a number or an instant, never as text), sent in a query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Since {
    /// Wire name of the record field the backend maintains (`updatedAt`, `modifiedAt`).
    pub field: String,
    /// The query parameter that carries the bound (`updatedAt_gte`, `where`).
    pub param: String,
    /// The parameter's value with `{since}` standing for the bound, e.g. Parse Server's
    /// `{"updatedAt": {"$gte": {"__type": "Date", "iso": "{since}"}}}`; `None`: the bound
    /// alone.
    pub template: Option<String>,
    /// The bound's form in the parameter.
    pub format: TimeFormat,
    /// The bound of the first pull, before any record was seen (`None`: the first pull has
    /// no bound). Some APIs count exactly only under a filter: Parse Server on PostgreSQL
    /// answers an estimate (0 on a fresh table) to `count=1` without a `where`.
    pub initial: Option<String>,
}

impl Since {
    /// The bound `field >= value` in `param`, as the records carry it.
    pub fn new(field: impl Into<String>, param: impl Into<String>) -> Since {
        Since {
            field: field.into(),
            param: param.into(),
            template: None,
            format: TimeFormat::AsReceived,
            initial: None,
        }
    }

    /// The bound of the first pull (see [`initial`](Self::initial)).
    #[must_use]
    pub fn initial(mut self, bound: impl Into<String>) -> Since {
        self.initial = Some(bound.into());
        self
    }

    /// Writes the bound into a template (`{since}` is replaced).
    #[must_use]
    pub fn template(mut self, template: impl Into<String>) -> Since {
        self.template = Some(template.into());
        self
    }

    /// The bound's form.
    #[must_use]
    pub fn format(mut self, format: TimeFormat) -> Since {
        self.format = format;
        self
    }

    /// The query parameter's value for the bound `value`.
    pub(crate) fn parameter(&self, value: &str) -> Option<(String, String)> {
        let bound = self.format.render(value)?;
        let text = match &self.template {
            Some(template) => template.replace("{since}", &bound),
            None => bound,
        };
        Some((self.param.clone(), text))
    }
}

/// How a pull asks for the next page.
///
/// Under a [`Since`] bound, every page of a pass asks from the pass's bound, sorted by the
/// bound's field; the next pass starts from the largest value seen. With `PageNumber` or
/// `Offset`, a record changed by someone else while a pass of several pages runs moves to the
/// end of the order and shifts the records behind it back by one, so one of those can be
/// missed by this pass and arrives with its next change; `Keyset` paging has no such gap,
/// and a pass of one page, `Cursor` and `NextUrl` paging whose tokens the server keeps
/// stable, and pulls without a bound are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Paging {
    /// One request answers everything (since the bound, if there is one).
    None,
    /// Page number and page size (`_page=2&_limit=50`); pages count from `first`.
    PageNumber {
        /// Parameter of the page number.
        page_param: String,
        /// Parameter of the page size.
        size_param: String,
        /// Number of the first page (usually 1).
        first: u64,
    },
    /// Offset and limit (`skip=100&limit=50`).
    Offset {
        /// Parameter of the offset (records to skip).
        offset_param: String,
        /// Parameter of the page size.
        limit_param: String,
    },
    /// A token the previous page handed out ([`NextPage::BodyCursor`] or
    /// [`NextPage::Header`] with a token), sent in `cursor_param`; the first page has none.
    Cursor {
        /// Parameter that carries the token.
        cursor_param: String,
        /// Parameter of the page size, if the API takes one.
        limit_param: Option<String>,
    },
    /// The next page is a URL the previous page named ([`NextPage::LinkHeader`],
    /// [`NextPage::Header`], [`NextPage::BodyUrl`]); the first request may send a size.
    NextUrl {
        /// Parameter of the page size on the first request, if the API takes one.
        limit_param: Option<String>,
    },
    /// Keyset paging on the [`Since`] field (which it needs, with an inclusive bound such as
    /// `$gte` and the order by that field): each page asks from the largest value read so
    /// far, skipping the records of exactly that value already read. A record changed during
    /// the pass moves past the bound and is read later in it; none is skipped. Follows
    /// [`NextPage::FullPage`] or [`NextPage::TotalCount`] (the count of each page's query).
    Keyset {
        /// Parameter of the page size.
        limit_param: String,
        /// Parameter of the records to skip (those of the bound's value already read).
        skip_param: String,
    },
}

/// What says that more pages follow. Never "the page was full" unless asked for with
/// [`NextPage::FullPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextPage {
    /// No other pages (with [`Paging::None`]).
    Never,
    /// `Link: <url>; rel="next"` (RFC 8288).
    LinkHeader,
    /// A header whose value is the next page's URL (`Next-Page`) or token; absent or empty
    /// on the last page.
    Header(String),
    /// A dot path in the body to the next page's URL; absent, `null` or empty on the last.
    BodyUrl(String),
    /// A dot path in the body to the next page's token (for [`Paging::Cursor`]).
    BodyCursor(String),
    /// The total count of matching records: more follow while fewer were read in this pass.
    TotalCount(CountAt),
    /// A page with as many records as asked for is followed by another (for APIs that give
    /// no signal at all; costs one empty request at the end).
    FullPage,
}

/// Where a total count is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CountAt {
    /// A response header (`X-Total-Count`).
    Header(String),
    /// A dot path in the body (`count`).
    Body(String),
}

/// How a model is pulled from a REST API: the bound, the order, the paging scheme and its
/// signal, where the records are, and which ones are tombstones. A [`PullMode::Rest`](crate::PullMode::Rest).
///
/// ```
/// use sync_core::{NextPage, Paging, PullMode, RestPull, Since, TimeFormat};
/// // Parse Server: `where` holds the bound, `order`, `skip` + `limit`, `count=1` answers the total.
/// let pull = RestPull::new()
///     .since(Since::new("updatedAt", "where")
///         .template(r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"{since}"}}}"#)
///         .format(TimeFormat::Iso8601))
///     .sort("order", "updatedAt")
///     .paging(Paging::Offset { offset_param: "skip".into(), limit_param: "limit".into() })
///     .next_page(NextPage::TotalCount(sync_core::CountAt::Body("count".into())))
///     .parameter("count", "1")
///     .records_at("results");
/// let mode = PullMode::from(pull);
/// # let _ = mode;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestPull {
    /// The incremental bound; `None`: every pull reads everything.
    pub since: Option<Since>,
    /// Sort parameter and value (`("_sort", "modifiedAt")`, `("order", "updatedAt")`).
    pub sort: Option<(String, String)>,
    /// The paging scheme.
    pub paging: Paging,
    /// What says more pages follow.
    pub next: NextPage,
    /// Extra query parameters of every page request (`count=1`).
    pub parameters: Vec<(String, String)>,
    /// Dot path to the records in a page (`results`, `data.items`); `None`: the page is the
    /// array, or an object with `items` or `data`.
    pub records_at: Option<String>,
}

impl Default for RestPull {
    fn default() -> Self {
        RestPull::new()
    }
}

impl RestPull {
    /// One request, everything, no bound.
    pub fn new() -> RestPull {
        RestPull {
            since: None,
            sort: None,
            paging: Paging::None,
            next: NextPage::Never,
            parameters: Vec::new(),
            records_at: None,
        }
    }

    /// The incremental bound.
    #[must_use]
    pub fn since(mut self, since: Since) -> Self {
        self.since = Some(since);
        self
    }

    /// The sort parameter and its value.
    #[must_use]
    pub fn sort(mut self, param: impl Into<String>, value: impl Into<String>) -> Self {
        self.sort = Some((param.into(), value.into()));
        self
    }

    /// The paging scheme.
    #[must_use]
    pub fn paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }

    /// The signal of more pages.
    #[must_use]
    pub fn next_page(mut self, next: NextPage) -> Self {
        self.next = next;
        self
    }

    /// An extra query parameter of every page request.
    #[must_use]
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.push((name.into(), value.into()));
        self
    }

    /// Where the records of a page are.
    #[must_use]
    pub fn records_at(mut self, path: impl Into<String>) -> Self {
        self.records_at = Some(path.into());
        self
    }

    /// Why this configuration cannot work, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(since) = &self.since {
            if since.field.is_empty() {
                return Err("`RestPull::since` names no record field".into());
            }
            if since.param.is_empty() {
                return Err(format!(
                    "`RestPull::since` on `{}` names no query parameter to send the bound in",
                    since.field
                ));
            }
            if let Some(initial) = &since.initial {
                if since.format.render(initial).is_none() {
                    return Err(format!(
                        "the initial bound {initial:?} cannot be written as {:?}",
                        since.format
                    ));
                }
            }
            if let Some(template) = &since.template {
                if !template.contains("{since}") {
                    return Err(format!(
                        "the `since` template {template:?} has no `{{since}}` for the bound"
                    ));
                }
            }
        }
        if let Some((param, value)) = &self.sort {
            if param.is_empty() || value.is_empty() {
                return Err("`RestPull::sort` needs a parameter name and a value".into());
            }
        }
        if let Some(path) = &self.records_at {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "`RestPull::records_at` {path:?} is not a dot path of non-empty keys"
                ));
            }
        }
        let fits = match (&self.paging, &self.next) {
            (Paging::None, NextPage::Never) => true,
            (Paging::None, other) => {
                return Err(format!(
                    "`Paging::None` reads one page, so the signal {other:?} would never be followed; \
                     choose a paging scheme"
                ))
            }
            (_, NextPage::Never) => {
                return Err(
                    "a paging scheme needs a `NextPage` signal (`NextPage::Never` is for `Paging::None`)"
                        .into(),
                )
            }
            (Paging::PageNumber { .. } | Paging::Offset { .. }, next) => matches!(
                next,
                NextPage::TotalCount(_)
                    | NextPage::FullPage
                    | NextPage::LinkHeader
                    | NextPage::Header(_)
                    | NextPage::BodyUrl(_)
            ),
            (Paging::Cursor { .. }, next) => {
                matches!(next, NextPage::BodyCursor(_) | NextPage::Header(_))
            }
            (Paging::NextUrl { .. }, next) => matches!(
                next,
                NextPage::LinkHeader | NextPage::Header(_) | NextPage::BodyUrl(_)
            ),
            (Paging::Keyset { .. }, next) => {
                if self.since.is_none() {
                    return Err("`Paging::Keyset` pages on the `since` field: set `RestPull::since`".into());
                }
                matches!(next, NextPage::FullPage | NextPage::TotalCount(_))
            }
        };
        if !fits {
            return Err(format!(
                "paging {:?} cannot follow the signal {:?}: a page number or offset follows a \
                 count, a full page or a next URL; a cursor follows a token; a next URL \
                 follows a link",
                self.paging, self.next
            ));
        }
        for name in self.page_parameter_names() {
            if name.is_empty() {
                return Err(format!(
                    "paging {:?} has an empty parameter name",
                    self.paging
                ));
            }
        }
        Ok(())
    }

    fn page_parameter_names(&self) -> Vec<&str> {
        match &self.paging {
            Paging::None => Vec::new(),
            Paging::PageNumber {
                page_param,
                size_param,
                ..
            } => vec![page_param, size_param],
            Paging::Offset {
                offset_param,
                limit_param,
            } => vec![offset_param, limit_param],
            Paging::Cursor {
                cursor_param,
                limit_param,
            } => std::iter::once(cursor_param.as_str())
                .chain(limit_param.as_deref())
                .collect(),
            Paging::NextUrl { limit_param } => limit_param.iter().map(String::as_str).collect(),
            Paging::Keyset {
                limit_param,
                skip_param,
            } => vec![limit_param, skip_param],
        }
    }
}

/// Where a pull of a [`RestPull`] stands, kept as the model's cursor (JSON): the bound of the
/// pass under way, the largest value seen in it, the position of the next page and the
/// records read so far in the pass.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PullState {
    /// The bound this pass asks from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) since: Option<String>,
    /// The largest value of the bound's field seen in this pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) newest: Option<String>,
    /// The next page: a page number, an offset, a token or a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
    /// Records read so far in this pass (for a total count).
    #[serde(default)]
    pub(crate) read: u64,
}

impl PullState {
    /// The state a stored cursor stands for; a cursor that is not one (written by another
    /// pull mode) is taken as the bound.
    pub(crate) fn from_cursor(cursor: Option<&str>) -> PullState {
        match cursor {
            None => PullState::default(),
            Some(text) => serde_json::from_str(text).unwrap_or_else(|_| PullState {
                since: Some(text.to_owned()),
                ..PullState::default()
            }),
        }
    }

    /// The cursor text.
    pub(crate) fn to_cursor(&self) -> String {
        // A struct of strings and a number always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The state after a page: the next page of the same pass, or, at its end, a new pass
    /// from the largest value seen.
    pub(crate) fn after_page(
        &self,
        values: impl Iterator<Item = String>,
        read: u64,
        next: Option<String>,
    ) -> PullState {
        let newest = crate::rest::newest_cursor(values.chain(self.newest.clone()), None);
        match next {
            Some(next) => PullState {
                since: self.since.clone(),
                newest,
                next: Some(next),
                read: self.read.saturating_add(read),
            },
            None => PullState {
                since: crate::rest::newest_cursor(newest.into_iter(), self.since.as_deref()),
                ..PullState::default()
            },
        }
    }
}

/// Where a record's version comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionSource {
    /// No versions: writes are unconditional, conflicts come only from the backend's own
    /// statuses.
    None,
    /// A record field holding an integer (`version`, `rev`).
    Field(String),
    /// The `ETag` header of single reads and write answers: an integer, quoted or not, weak
    /// (`W/`) or not (`"7"`). An opaque ETag cannot be kept as a version and reads as none.
    /// List reads, which have no header per record, read the records' `version` field.
    ETag,
}

/// The header of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conditional {
    /// Header name (`If-Match`).
    pub header: String,
    /// Value with `{version}` for the base version (`"{version}"` quoted for ETags).
    pub template: String,
}

/// A record's updated-at, for [`ConflictStrategy::LastUpdateWins`](crate::ConflictStrategy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdatedAt {
    /// Wire name of the field.
    pub field: String,
    /// Its form (a number: `EpochMillis` or `EpochSeconds`; text: RFC 3339).
    pub format: TimeFormat,
}

/// Which pulled records are tombstones.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Tombstone {
    /// Wire name of the field.
    pub field: String,
    /// The value that marks a deleted record (`true`, `"deleted"`).
    pub value: Value,
}

/// An answer to a create that says the record exists already (a replay whose first answer
/// was lost): the record is fetched, and if it holds what was sent the create is applied;
/// otherwise it is a conflict with the record found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AlreadyExists {
    /// HTTP statuses of such an answer (409, 400).
    pub statuses: Vec<u16>,
    /// Dot path of an error code in the body and the codes that mean "exists" (Parse
    /// Server: `code` 137); `None`: the status alone says it.
    pub code: Option<(String, Vec<Value>)>,
}

/// Ids the backend assigns: the create's answer carries the server's id, the engine re-keys
/// the local row and every queued op of the record in one transaction and emits
/// [`SyncEvent::RecordRekeyed`](crate::SyncEvent::RecordRekeyed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerIds {
    /// Dot path of the id in the create's answer (`objectId`, `data.id`).
    pub id_at: String,
    /// A record field that keeps the local id on the server, so a replayed create (its
    /// answer lost, or the process stopped before the re-key) finds the copy it made
    /// instead of making a second one: a model field the application leaves to the engine.
    pub local_id_field: String,
    /// Query parameter and template (`{local_id}` for the local id) of a list read that
    /// finds a record by `local_id_field`: Parse Server `("where",
    /// r#"{"localId":"{local_id}"}"#)`, json-server `("localId", "{local_id}")`.
    pub lookup: (String, String),
}

/// How a REST backend treats records beyond the requests themselves: versions and
/// conditional writes, conflict answers, replays, ids, tombstones and fields the server
/// maintains. The default is sync-server's REST behaviour.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RestBackend {
    /// Header of the idempotency key sent with every write; `None`: none is sent.
    pub idempotency_header: Option<String>,
    /// Where a record's version is.
    pub version: VersionSource,
    /// The header of a write based on a known version; `None`: unconditional writes.
    pub conditional: Option<Conditional>,
    /// Statuses that mean "your base version is stale" (409, 412).
    pub conflict_statuses: Vec<u16>,
    /// Dot path of the current record in a conflict answer; when it is absent (or the
    /// answer has no body), the record is fetched.
    pub conflict_record_at: Option<String>,
    /// "Exists already" answers to a create.
    pub already_exists: Option<AlreadyExists>,
    /// The updated-at field for `LastUpdateWins`.
    pub updated_at: Option<UpdatedAt>,
    /// Which pulled records are tombstones.
    pub tombstone: Option<Tombstone>,
    /// Fields the server maintains (`createdAt`, `updatedAt`): received and stored, never
    /// sent.
    pub server_fields: Vec<String>,
    /// Ids assigned by the backend.
    pub server_ids: Option<ServerIds>,
}

impl Default for RestBackend {
    fn default() -> Self {
        RestBackend {
            idempotency_header: Some(sync_protocol::IDEMPOTENCY_KEY_HEADER.to_owned()),
            version: VersionSource::Field(VERSION_KEY.to_owned()),
            conditional: Some(Conditional {
                header: "If-Match".to_owned(),
                template: "{version}".to_owned(),
            }),
            conflict_statuses: vec![409],
            conflict_record_at: Some("record".to_owned()),
            already_exists: None,
            updated_at: None,
            tombstone: None,
            server_fields: Vec::new(),
            server_ids: None,
        }
    }
}

impl RestBackend {
    /// sync-server's REST behaviour: `idempotency-key`, `version`, `If-Match: {version}`, 409
    /// with the record under `record`.
    pub fn new() -> RestBackend {
        RestBackend::default()
    }

    /// The idempotency key's header, or none.
    #[must_use]
    pub fn idempotency_header(mut self, header: Option<&str>) -> Self {
        self.idempotency_header = header.map(str::to_owned);
        self
    }

    /// Where versions are.
    #[must_use]
    pub fn version(mut self, version: VersionSource) -> Self {
        self.version = version;
        self
    }

    /// The conditional header (`template` holds `{version}`), or none.
    #[must_use]
    pub fn conditional(mut self, header_and_template: Option<(&str, &str)>) -> Self {
        self.conditional = header_and_template.map(|(header, template)| Conditional {
            header: header.to_owned(),
            template: template.to_owned(),
        });
        self
    }

    /// The statuses of a stale base version.
    #[must_use]
    pub fn conflict_statuses(mut self, statuses: &[u16]) -> Self {
        self.conflict_statuses = statuses.to_vec();
        self
    }

    /// Where the current record is in a conflict answer (`None`: always fetched).
    #[must_use]
    pub fn conflict_record_at(mut self, path: Option<&str>) -> Self {
        self.conflict_record_at = path.map(str::to_owned);
        self
    }

    /// "Exists already" answers to a create: these statuses, and with `code` an error code
    /// at a dot path that is one of the values.
    #[must_use]
    pub fn already_exists(mut self, statuses: &[u16], code: Option<(&str, Vec<Value>)>) -> Self {
        self.already_exists = Some(AlreadyExists {
            statuses: statuses.to_vec(),
            code: code.map(|(path, codes)| (path.to_owned(), codes)),
        });
        self
    }

    /// The updated-at field and its form.
    #[must_use]
    pub fn updated_at(mut self, field: impl Into<String>, format: TimeFormat) -> Self {
        self.updated_at = Some(UpdatedAt {
            field: field.into(),
            format,
        });
        self
    }

    /// Records whose `field` is `value` are tombstones.
    #[must_use]
    pub fn tombstone(mut self, field: impl Into<String>, value: Value) -> Self {
        self.tombstone = Some(Tombstone {
            field: field.into(),
            value,
        });
        self
    }

    /// Fields the server maintains: stored when received, never sent.
    #[must_use]
    pub fn server_fields(mut self, fields: &[&str]) -> Self {
        self.server_fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// Ids assigned by the backend (see [`ServerIds`]).
    #[must_use]
    pub fn server_ids(
        mut self,
        id_at: impl Into<String>,
        local_id_field: impl Into<String>,
        lookup: (&str, &str),
    ) -> Self {
        self.server_ids = Some(ServerIds {
            id_at: id_at.into(),
            local_id_field: local_id_field.into(),
            lookup: (lookup.0.to_owned(), lookup.1.to_owned()),
        });
        self
    }

    /// Why this configuration cannot work for `schema`, if it cannot.
    pub(crate) fn check(&self, schema: &sync_schema::ModelSchema) -> Result<(), String> {
        let field = |name: &str, what: &str| -> Result<(), String> {
            if schema.field_by_wire_name(name).is_none() {
                return Err(format!(
                    "{what} `{name}` is not a field of the model (wire names: {})",
                    schema
                        .fields
                        .iter()
                        .map(|f| f.wire_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok(())
        };
        if let Some(header) = &self.idempotency_header {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!(
                    "idempotency header {header:?} is not a header name"
                ));
            }
        }
        if let VersionSource::Field(name) = &self.version {
            if name.is_empty() {
                return Err("`VersionSource::Field` names no field".into());
            }
        }
        if let Some(conditional) = &self.conditional {
            if reqwest::header::HeaderName::from_bytes(conditional.header.as_bytes()).is_err() {
                return Err(format!(
                    "conditional header {:?} is not a header name",
                    conditional.header
                ));
            }
            if !conditional.template.contains("{version}") {
                return Err(format!(
                    "the conditional header's template {:?} has no `{{version}}`",
                    conditional.template
                ));
            }
            if self.version == VersionSource::None {
                return Err(
                    "a conditional header needs versions: set `RestBackend::version` or turn the header off"
                        .into(),
                );
            }
        }
        if self
            .conflict_statuses
            .iter()
            .any(|s| !(400..500).contains(s))
        {
            return Err(format!(
                "conflict statuses {:?} must be 4xx",
                self.conflict_statuses
            ));
        }
        if let Some(exists) = &self.already_exists {
            if exists.statuses.is_empty() {
                return Err("`AlreadyExists` lists no status".into());
            }
            if let Some((path, codes)) = &exists.code {
                if path.is_empty() || codes.is_empty() {
                    return Err("`AlreadyExists::code` needs a path and at least one code".into());
                }
            }
        }
        if let Some(updated) = &self.updated_at {
            field(&updated.field, "the updated-at field")?;
        }
        for name in &self.server_fields {
            field(name, "the server field")?;
            if name == schema.id().wire_name {
                return Err(format!(
                    "the id `{name}` cannot be a server field; use `server_ids`"
                ));
            }
        }
        if let Some(ids) = &self.server_ids {
            if ids.id_at.is_empty() {
                return Err("`ServerIds::id_at` is empty".into());
            }
            field(&ids.local_id_field, "the local-id field of `server_ids`")?;
            if ids.local_id_field == schema.id().wire_name {
                return Err("`ServerIds::local_id_field` must be a field other than the id".into());
            }
            if ids.lookup.0.is_empty() || !ids.lookup.1.contains("{local_id}") {
                return Err(
                    "`ServerIds::lookup` needs a parameter name and a template with `{local_id}`"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Rewrites a received record into the protocol's keys: the version (from its field, or
    /// `etag`), `deleted` for a tombstone, `updated_at` from the updated-at field. The
    /// model's own fields stay as they are.
    pub(crate) fn to_wire(&self, object: &mut Map<String, Value>, etag: Option<&str>) {
        match &self.version {
            VersionSource::None => {
                object.remove(VERSION_KEY);
            }
            VersionSource::Field(name) if name == VERSION_KEY => {}
            VersionSource::Field(name) => match object.get(name).cloned() {
                Some(v) => {
                    object.insert(VERSION_KEY.to_owned(), v);
                }
                None => {
                    object.remove(VERSION_KEY);
                }
            },
            // A list has no header per record: there the records' own `version` stands.
            VersionSource::ETag => match etag.map(etag_version) {
                Some(Some(v)) => {
                    object.insert(VERSION_KEY.to_owned(), Value::from(v));
                }
                Some(None) => {
                    object.remove(VERSION_KEY);
                }
                None => {}
            },
        }
        if let Some(tomb) = &self.tombstone {
            if object.get(&tomb.field) == Some(&tomb.value) {
                object.insert(DELETED_KEY.to_owned(), Value::Bool(true));
            }
        }
        if let Some(updated) = &self.updated_at {
            if let Some(at) = object
                .get(&updated.field)
                .and_then(|v| updated.format.read(v))
            {
                object.insert(
                    UPDATED_AT_KEY.to_owned(),
                    Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
                );
            }
        }
    }

    /// The conditional header for `base_version`, if writes are conditional.
    pub(crate) fn conditional_header(&self, base_version: i64) -> Option<(String, String)> {
        let conditional = self.conditional.as_ref()?;
        (base_version > 0).then(|| {
            (
                conditional.header.clone(),
                conditional
                    .template
                    .replace("{version}", &base_version.to_string()),
            )
        })
    }

    /// Whether an error answer to a create says the record exists already.
    pub(crate) fn is_already_exists(&self, status: u16, body: &Value) -> bool {
        let Some(exists) = &self.already_exists else {
            return false;
        };
        if !exists.statuses.contains(&status) {
            return false;
        }
        match &exists.code {
            None => true,
            Some((path, codes)) => at_path(body, path).is_some_and(|code| codes.contains(code)),
        }
    }

    /// Removes what a write must not send: the server's fields, and with server ids the id.
    pub(crate) fn outgoing(
        &self,
        schema: &sync_schema::ModelSchema,
        data: &mut Map<String, Value>,
    ) {
        for name in &self.server_fields {
            data.remove(name);
        }
        if self.server_ids.is_some() {
            data.remove(schema.id().wire_name);
        }
    }
}

/// The integer an ETag stands for (`"7"`, `W/"7"`, `7`).
pub(crate) fn etag_version(etag: &str) -> Option<i64> {
    let text = etag.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"').parse().ok()
}

/// The value at a dot path (numeric segments index arrays).
pub(crate) fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut value = value;
    for segment in path.split('.') {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The value at a dot path, taken out.
pub(crate) fn take_path(value: Value, path: &str) -> Option<Value> {
    let mut value = value;
    for segment in path.split('.') {
        value = match value {
            Value::Object(mut map) => map.remove(segment)?,
            Value::Array(mut items) => {
                let index = segment.parse::<usize>().ok()?;
                if index >= items.len() {
                    return None;
                }
                items.swap_remove(index)
            }
            _ => return None,
        };
    }
    Some(value)
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_values_are_rendered_in_their_format_and_template() {
        let since = Since::new("updatedAt", "where")
            .template(r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"{since}"}}}"#)
            .format(TimeFormat::Iso8601);
        assert_eq!(
            since.parameter("2026-01-01T00:00:00.5Z"),
            Some((
                "where".to_owned(),
                r#"{"updatedAt":{"$gte":{"__type":"Date","iso":"2026-01-01T00:00:00.500Z"}}}"#
                    .to_owned()
            ))
        );
        let ms = Since::new("m", "m_gte").format(TimeFormat::EpochMillis);
        assert_eq!(
            ms.parameter("1970-01-01T00:00:01Z").map(|p| p.1).as_deref(),
            Some("1000")
        );
        assert_eq!(
            TimeFormat::Iso8601.render("1000").as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
        assert_eq!(TimeFormat::EpochSeconds.render("not a time"), None);
        assert_eq!(
            TimeFormat::AsReceived.render("x").as_deref(),
            Some("x"),
            "as received is as received"
        );
    }

    #[test]
    fn pull_configurations_that_cannot_work_are_refused() {
        assert_eq!(RestPull::new().check(), Ok(()));
        let bad = [
            RestPull::new().since(Since::new("updatedAt", "")),
            RestPull::new().since(Since::new("", "since")),
            RestPull::new().since(Since::new("u", "where").template("{\"u\": 1}")),
            RestPull::new().since(
                Since::new("u", "u_gte")
                    .format(TimeFormat::Iso8601)
                    .initial("yesterday"),
            ),
            RestPull::new().next_page(NextPage::LinkHeader),
            RestPull::new().paging(Paging::NextUrl { limit_param: None }),
            RestPull::new()
                .paging(Paging::Cursor {
                    cursor_param: "after".into(),
                    limit_param: None,
                })
                .next_page(NextPage::TotalCount(CountAt::Body("count".into()))),
            RestPull::new()
                .paging(Paging::NextUrl { limit_param: None })
                .next_page(NextPage::FullPage),
            RestPull::new()
                .paging(Paging::Offset {
                    offset_param: String::new(),
                    limit_param: "limit".into(),
                })
                .next_page(NextPage::FullPage),
            RestPull::new().records_at("a..b"),
            RestPull::new()
                .paging(Paging::Keyset {
                    limit_param: "limit".into(),
                    skip_param: "skip".into(),
                })
                .next_page(NextPage::FullPage),
            RestPull::new()
                .since(Since::new("u", "u_gte"))
                .paging(Paging::Keyset {
                    limit_param: "limit".into(),
                    skip_param: "skip".into(),
                })
                .next_page(NextPage::LinkHeader),
        ];
        for pull in bad {
            assert!(pull.check().is_err(), "{pull:?}");
        }
        let good = RestPull::new()
            .paging(Paging::NextUrl {
                limit_param: Some("limit".into()),
            })
            .next_page(NextPage::Header("Next-Page".into()));
        assert_eq!(good.check(), Ok(()));
    }

    #[test]
    fn pull_state_pages_within_a_pass_then_moves_the_bound() {
        let start = PullState::from_cursor(None);
        let mid = start.after_page(
            ["9", "10"].map(str::to_owned).into_iter(),
            2,
            Some("2".into()),
        );
        assert_eq!(mid.since, None, "the pass keeps its bound");
        assert_eq!(mid.newest.as_deref(), Some("10"));
        assert_eq!((mid.next.as_deref(), mid.read), (Some("2"), 2));
        let back = PullState::from_cursor(Some(&mid.to_cursor()));
        assert_eq!(back, mid);
        let end = back.after_page(["8"].map(str::to_owned).into_iter(), 1, None);
        assert_eq!(
            end,
            PullState {
                since: Some("10".into()),
                ..PullState::default()
            }
        );
        // An empty last pass keeps its bound.
        let same = end.after_page(std::iter::empty(), 0, None);
        assert_eq!(same.since.as_deref(), Some("10"));
        // A cursor of another mode is the bound.
        assert_eq!(
            PullState::from_cursor(Some("2026-01-01T00:00:00Z"))
                .since
                .as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn received_records_are_read_into_the_protocols_keys() {
        let backend = RestBackend::new()
            .version(VersionSource::Field("rev".into()))
            .tombstone("state", json!("deleted"))
            .updated_at("modifiedAt", TimeFormat::EpochMillis);
        let mut object = json!({"id": "a", "rev": 4, "state": "deleted", "modifiedAt": 1000})
            .as_object()
            .cloned()
            .unwrap();
        backend.to_wire(&mut object, None);
        assert_eq!(object["version"], 4);
        assert_eq!(object["deleted"], true);
        assert_eq!(object["updated_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(object["rev"], 4, "the model's own field stays");

        let etag = RestBackend::new().version(VersionSource::ETag);
        let mut object = json!({"id": "a", "version": 99})
            .as_object()
            .cloned()
            .unwrap();
        etag.to_wire(&mut object, None);
        assert_eq!(object["version"], 99, "a list's record keeps its field");
        etag.to_wire(&mut object, Some("W/\"7\""));
        assert_eq!(object["version"], 7);
        etag.to_wire(&mut object, Some("\"opaque-tag\""));
        assert!(object.get("version").is_none(), "{object:?}");
        assert_eq!(etag_version("12"), Some(12));
    }

    #[test]
    fn conditional_headers_and_already_exists_answers() {
        let backend = RestBackend::new()
            .version(VersionSource::ETag)
            .conditional(Some(("If-Match", "\"{version}\"")))
            .already_exists(&[400], Some(("code", vec![json!(137)])));
        assert_eq!(
            backend.conditional_header(3),
            Some(("If-Match".to_owned(), "\"3\"".to_owned()))
        );
        assert_eq!(backend.conditional_header(0), None, "never acknowledged");
        assert!(backend.is_already_exists(400, &json!({"code": 137, "error": "dup"})));
        assert!(!backend.is_already_exists(400, &json!({"code": 105})));
        assert!(!backend.is_already_exists(409, &json!({"code": 137})));
        assert!(!RestBackend::new().is_already_exists(409, &json!({})));
    }

    #[test]
    fn link_headers_name_their_next_page() {
        assert_eq!(
            link_next(r#"<http://h/a?_page=1>; rel="first", <http://h/a?_page=2>; rel="next""#)
                .as_deref(),
            Some("http://h/a?_page=2")
        );
        assert_eq!(link_next(r#"<http://h/a?_page=1>; rel="prev""#), None);
        assert_eq!(at_path(&json!({"a": [{"b": 1}]}), "a.0.b"), Some(&json!(1)));
        assert_eq!(take_path(json!({"a": {"b": 2}}), "a.b"), Some(json!(2)));
    }
}
