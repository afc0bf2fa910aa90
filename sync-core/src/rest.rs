//! REST request configuration: how a model's operations map onto an HTTP API.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::error::{JsonKind, RestError};

/// Characters left as they are in a placeholder value: RFC 3986 unreserved.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// HTTP method of a configured request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestMethod {
    /// Read one record or a page of records.
    Get,
    /// Create a record.
    Post,
    /// Replace a record (full update).
    Put,
    /// Change some fields of a record (delta update).
    Patch,
    /// Delete a record.
    Delete,
}

impl RestMethod {
    /// Every method, in the order of [`RestRequests`]' fields.
    pub const ALL: [RestMethod; 5] = [
        RestMethod::Get,
        RestMethod::Post,
        RestMethod::Put,
        RestMethod::Patch,
        RestMethod::Delete,
    ];

    /// The HTTP method name (`"PATCH"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestMethod::Get => "GET",
            RestMethod::Post => "POST",
            RestMethod::Put => "PUT",
            RestMethod::Patch => "PATCH",
            RestMethod::Delete => "DELETE",
        }
    }

    /// True for methods that address one record (`/{endpoint}/{id}` by default).
    pub fn targets_item(self) -> bool {
        !matches!(self, RestMethod::Post)
    }
}

impl fmt::Display for RestMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns a response body into the shape the runtime expects, after
/// `response_data_key` extraction.
pub type ResponseTransformer = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// How one kind of request (one [`RestMethod`]) is sent.
///
/// Which option takes effect where, with [`HttpRemote`](crate::HttpRemote) (the README's
/// table says the same):
///
/// | option | `get`: pulls, `fetch`, remote queries, `fetch_items` | writes, `rest_only()` (one call per change) | writes, the batch endpoint (default) |
/// | --- | --- | --- | --- |
/// | `url`, `url_parameters` | the request's URL | the request's URL | not used: one `POST` to the batch path |
/// | `headers` | sent | sent | not sent |
/// | `top_level_key` | not used (no body) | wraps the body | not used: the protocol's body |
/// | `supplemental_top_level_data` | query parameters (scalar values only) | merged into the body | not used |
/// | `response_data_key`, `response_transformer` | applied to the answer | applied to the answer | not used: the protocol's answer |
/// | `timeout` | per request | per request | per batch request (see below) |
/// | `retry_count` | in-request retries | in-request retries | in-request retries of the batch request |
///
/// On the batch path a push sends the ops of one model in one request per distinct
/// (`timeout`, `retry_count`) of their methods (create: `post`, delta update: `patch`, full
/// update: `put`, delete: `delete`), so each op waits and is retried as its method says;
/// with no per-method setting, or the same on every method, that is one request as before.
/// Retrying a batch is safe: every op carries its idempotency key. A custom
/// [`Remote`](crate::remote::Remote) gets these requests in its [`ModelRoute`](crate::remote::ModelRoute) and
/// decides what to use; [`WebSocketRemote`](crate::WebSocketRemote) uses none of them (its
/// request timeout bounds every request, the engine's retry policy retries).
///
/// URL templates are relative to the
/// base URL (joined with exactly one `/`) unless they start with `http://` or
/// `https://`. `{name}` placeholders are filled from
/// [`url_parameters`](RestRequest::url_parameters) first, then from the record's
/// fields by wire name; `{id}` is the record's id. A template is a collection
/// URL: for a request about one record that has no `{id}` placeholder, `/{id}`
/// is appended.
///
/// ```
/// use sync_core::{RestMethod, RestRequest};
/// let req = RestRequest::new(RestMethod::Patch)
///     .url("databases/{db}/collections/todos/documents")
///     .url_parameter("db", "main");
/// let url = req.build_url("https://api.example.com/v1/", "todos", Some("a 1"), None).unwrap();
/// assert_eq!(url, "https://api.example.com/v1/databases/main/collections/todos/documents/a%201");
/// ```
#[derive(Clone)]
pub struct RestRequest {
    /// The method.
    pub method: RestMethod,
    /// URL template; `None` means the model's endpoint.
    pub url: Option<String>,
    /// Values for `{placeholders}`, used before the record's fields.
    pub url_parameters: BTreeMap<String, String>,
    /// Extra headers sent with the request.
    pub headers: BTreeMap<String, String>,
    /// Wrap the body as `{top_level_key: body}`.
    pub top_level_key: Option<String>,
    /// Entries merged into the top level of the body (beside `top_level_key` if set). On a
    /// `get`, which has no body, they are sent as query parameters instead (strings, numbers
    /// and booleans as text; a value of another kind is refused by
    /// [`SyncManagerBuilder::build`](crate::SyncManagerBuilder::build)); an entry whose name
    /// the request already sets (`since`, `limit`, a filter) is left out. A string value that
    /// is exactly one `{placeholder}` is filled as in
    /// [`shape_body_for`](Self::shape_body_for).
    pub supplemental_top_level_data: Option<Map<String, Value>>,
    /// Dot path (`data.items`) to the part of the response that holds the record(s).
    pub response_data_key: Option<String>,
    /// Request timeout; the remote's default
    /// ([`HttpRemoteBuilder::timeout`](crate::HttpRemoteBuilder::timeout), 30 s) when `None`.
    /// On the batch path it bounds the batch request that carries this method's ops.
    pub timeout: Option<Duration>,
    /// Retries, inside the one request, of a transiently failed request (a transport error,
    /// 408, 429, 5xx) before it is reported, after 200 ms, 400 ms, ...; none when `None`.
    /// What is still failing is then retried by the engine's [`RetryPolicy`](crate::RetryPolicy)
    /// as usual. On the batch path it retries the batch request that carries this method's
    /// ops.
    pub retry_count: Option<u32>,
    /// Applied to the response after `response_data_key`.
    pub response_transformer: Option<ResponseTransformer>,
    /// Send this operation with another HTTP method: a delta as `Put` where the API has no
    /// `PATCH`, a create as `Put` to the item URL where the API takes the client's id there.
    /// The URL follows the method sent (a `Put`/`Patch`/`Delete` addresses the item).
    pub send_as: Option<RestMethod>,
}

impl fmt::Debug for RestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("url_parameters", &self.url_parameters)
            .field("headers", &self.headers)
            .field("top_level_key", &self.top_level_key)
            .field(
                "supplemental_top_level_data",
                &self.supplemental_top_level_data,
            )
            .field("response_data_key", &self.response_data_key)
            .field("timeout", &self.timeout)
            .field("retry_count", &self.retry_count)
            .field("send_as", &self.send_as)
            .field(
                "response_transformer",
                &self
                    .response_transformer
                    .as_ref()
                    .map(|_| "Fn(Value) -> Value"),
            )
            .finish()
    }
}

impl RestRequest {
    /// A request with no options: the model's endpoint, body and response as they are.
    pub fn new(method: RestMethod) -> RestRequest {
        RestRequest {
            method,
            url: None,
            url_parameters: BTreeMap::new(),
            headers: BTreeMap::new(),
            top_level_key: None,
            supplemental_top_level_data: None,
            response_data_key: None,
            timeout: None,
            retry_count: None,
            response_transformer: None,
            send_as: None,
        }
    }

    /// Sends this operation with `method` instead (see [`send_as`](Self::send_as)).
    #[must_use]
    pub fn send_as(mut self, method: RestMethod) -> Self {
        self.send_as = Some(method);
        self
    }

    /// The HTTP method this request goes out with.
    pub fn method_sent(&self) -> RestMethod {
        self.send_as.unwrap_or(self.method)
    }

    /// Sets the URL template.
    #[must_use]
    pub fn url(mut self, template: impl Into<String>) -> Self {
        self.url = Some(template.into());
        self
    }

    /// Adds a value for a `{placeholder}`.
    #[must_use]
    pub fn url_parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.url_parameters.insert(name.into(), value.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Wraps the body under `key`.
    #[must_use]
    pub fn top_level_key(mut self, key: impl Into<String>) -> Self {
        self.top_level_key = Some(key.into());
        self
    }

    /// Merges `data` into the top level of the body.
    #[must_use]
    pub fn supplemental_top_level_data(mut self, data: Map<String, Value>) -> Self {
        self.supplemental_top_level_data = Some(data);
        self
    }

    /// Reads the record(s) from this dot path of the response.
    #[must_use]
    pub fn response_data_key(mut self, path: impl Into<String>) -> Self {
        self.response_data_key = Some(path.into());
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry count.
    #[must_use]
    pub fn retry_count(mut self, retries: u32) -> Self {
        self.retry_count = Some(retries);
        self
    }

    /// Sets a transformer applied to the response.
    #[must_use]
    pub fn response_transformer(
        mut self,
        transformer: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.response_transformer = Some(Arc::new(transformer));
        self
    }

    /// The URL of this request.
    ///
    /// `endpoint` is the model's endpoint, used when no template is set. `id`
    /// is the record's id for requests about one record (`/{id}` is appended
    /// when the template has no `{id}`). `record` supplies placeholder values
    /// after `url_parameters`.
    pub fn build_url(
        &self,
        base_url: &str,
        endpoint: &str,
        id: Option<&str>,
        record: Option<&Map<String, Value>>,
    ) -> Result<String, RestError> {
        let template = self.url.as_deref().unwrap_or(endpoint);
        let mut path = fill_template(template, |name| {
            if let Some(value) = self.url_parameters.get(name) {
                return Ok(Some(value.clone()));
            }
            if name == "id" {
                if let Some(id) = id {
                    return Ok(Some(id.to_owned()));
                }
            }
            match record.and_then(|r| r.get(name)) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(RestError::PlaceholderNotScalar {
                    template: template.to_owned(),
                    name: name.to_owned(),
                    kind: JsonKind::of(other),
                }),
            }
        })?;
        if let Some(id) = id {
            if !has_placeholder(template, "id") {
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.extend(utf8_percent_encode(id, PATH_SEGMENT));
            }
        }
        join_url(base_url, &path)
    }

    /// The body to send for `data` (a record or a delta): wrapped under
    /// `top_level_key` and merged with `supplemental_top_level_data`.
    ///
    /// Supplemental entries never overwrite a key of the record itself when
    /// there is no `top_level_key`.
    pub fn shape_body(&self, data: Map<String, Value>) -> Value {
        self.shape_body_for(data, None)
    }

    /// Like [`shape_body`](Self::shape_body), and a supplemental string value
    /// that is exactly one `{placeholder}` (`"{id}"`) is replaced by the value
    /// of that name: `url_parameters`, then `id`, then the record's fields. A
    /// placeholder with no value is left as it is.
    ///
    /// ```
    /// use serde_json::json;
    /// use sync_core::{RestMethod, RestRequest};
    /// let req = RestRequest::new(RestMethod::Post)
    ///     .top_level_key("data")
    ///     .supplemental_top_level_data(json!({"documentId": "{id}"}).as_object().unwrap().clone());
    /// let body = req.shape_body_for(json!({"title": "a"}).as_object().unwrap().clone(), Some("n1"));
    /// assert_eq!(body, json!({"documentId": "n1", "data": {"title": "a"}}));
    /// ```
    pub fn shape_body_for(&self, data: Map<String, Value>, id: Option<&str>) -> Value {
        let extra: Option<Map<String, Value>> =
            self.supplemental_top_level_data.as_ref().map(|extra| {
                extra
                    .iter()
                    .map(|(k, v)| (k.clone(), self.fill_supplemental(v, id, Some(&data))))
                    .collect()
            });
        let mut top = match &self.top_level_key {
            Some(key) => {
                let mut top = Map::new();
                top.insert(key.clone(), Value::Object(data));
                top
            }
            None => data,
        };
        if let Some(extra) = extra {
            for (key, value) in extra {
                top.entry(key).or_insert(value);
            }
        }
        Value::Object(top)
    }

    /// A supplemental value with a lone `{placeholder}` filled: `url_parameters`, then `id`,
    /// then the record's fields; anything else as it is.
    fn fill_supplemental(
        &self,
        value: &Value,
        id: Option<&str>,
        record: Option<&Map<String, Value>>,
    ) -> Value {
        let Some(text) = value.as_str() else {
            return value.clone();
        };
        let Some(name) = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .filter(|n| !n.is_empty() && !n.contains(['{', '}']))
        else {
            return value.clone();
        };
        if let Some(v) = self.url_parameters.get(name) {
            return Value::String(v.clone());
        }
        if name == "id" {
            if let Some(id) = id {
                return Value::String(id.to_owned());
            }
        }
        record
            .and_then(|r| r.get(name))
            .cloned()
            .unwrap_or_else(|| value.clone())
    }

    /// Refuses `supplemental_top_level_data` that a `get` cannot send as query parameters
    /// (a value that is not a string, number or boolean); names the first such entry.
    pub(crate) fn check_query_supplemental(&self) -> Result<(), String> {
        let Some(extra) = &self.supplemental_top_level_data else {
            return Ok(());
        };
        match extra.iter().find(|(_, v)| query_text(v).is_none()) {
            Some((key, value)) => Err(format!(
                "`get` supplemental entry `{key}` holds a JSON {}: a GET sends its supplemental entries as \
                 query parameters, so each value must be a string, number or boolean",
                JsonKind::of(value)
            )),
            None => Ok(()),
        }
    }

    /// The query parameters of a `get` from `supplemental_top_level_data`, except those named
    /// in `taken` (the request's own parameters win). Placeholders are filled from
    /// `url_parameters` and `id`.
    pub(crate) fn supplemental_query(
        &self,
        id: Option<&str>,
        taken: &[(String, String)],
    ) -> Vec<(String, String)> {
        let Some(extra) = &self.supplemental_top_level_data else {
            return Vec::new();
        };
        extra
            .iter()
            .filter(|(key, _)| !taken.iter().any(|(name, _)| name == *key))
            .filter_map(|(key, value)| {
                let value = self.fill_supplemental(value, id, None);
                query_text(&value).map(|text| (key.clone(), text))
            })
            .collect()
    }

    /// The part of a response that holds the record(s): the value at
    /// `response_data_key` (a dot path; numeric segments index arrays), then
    /// passed through `response_transformer`.
    pub fn extract_response(&self, body: Value) -> Result<Value, RestError> {
        let mut value = body;
        if let Some(path) = self.response_data_key.as_deref().filter(|p| !p.is_empty()) {
            for segment in path.split('.') {
                let next = match value {
                    Value::Object(mut map) => map.remove(segment),
                    Value::Array(mut items) => match segment.parse::<usize>() {
                        Ok(index) if index < items.len() => Some(items.swap_remove(index)),
                        _ => None,
                    },
                    _ => None,
                };
                value = next.ok_or_else(|| RestError::MissingResponseKey {
                    path: path.to_owned(),
                    missing: segment.to_owned(),
                })?;
            }
        }
        Ok(match &self.response_transformer {
            Some(transform) => transform(value),
            None => value,
        })
    }

    /// The timeout to use, given the client's default.
    pub fn effective_timeout(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    /// The retry count to use, given the policy's default.
    pub fn effective_retry_count(&self, default: u32) -> u32 {
        self.retry_count.unwrap_or(default)
    }

    /// Options of `other` that are set replace those of `self`; maps are merged
    /// with `other`'s entries winning.
    #[must_use]
    pub fn merged_with(mut self, other: &RestRequest) -> RestRequest {
        if other.url.is_some() {
            self.url.clone_from(&other.url);
        }
        self.url_parameters.extend(other.url_parameters.clone());
        self.headers.extend(other.headers.clone());
        if other.top_level_key.is_some() {
            self.top_level_key.clone_from(&other.top_level_key);
        }
        if let Some(extra) = &other.supplemental_top_level_data {
            let mut merged = self.supplemental_top_level_data.take().unwrap_or_default();
            merged.extend(extra.clone());
            self.supplemental_top_level_data = Some(merged);
        }
        if other.response_data_key.is_some() {
            self.response_data_key.clone_from(&other.response_data_key);
        }
        self.timeout = other.timeout.or(self.timeout);
        self.retry_count = other.retry_count.or(self.retry_count);
        if other.response_transformer.is_some() {
            self.response_transformer
                .clone_from(&other.response_transformer);
        }
        self.send_as = other.send_as.or(self.send_as);
        self
    }
}

/// How a model is pulled from the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullMode {
    /// The default protocol: `?since={cursor}&limit={n}` pages with `next_cursor` / `has_more`.
    Cursor,
    /// A REST API without versions: ask for records whose `field` is at least
    /// the largest value seen so far, with the URL parameter `since_param`
    /// (json-server: `"updatedAt_gte"`), paging with `_page`/`_limit`.
    UpdatedSince {
        /// Wire name of the updated-at field (a timestamp or number the API maintains).
        field: String,
        /// URL parameter that takes the lower bound.
        since_param: String,
    },
    /// A REST API without versions or timestamps: page through everything
    /// with `_page`/`_limit`; records missing from the remote are left alone.
    FullPaged,
    /// Any REST API: the bound, order, paging scheme and its signal, where the records are,
    /// as configured (see [`RestPull`](crate::RestPull)); `PullMode::from(rest_pull)` makes
    /// one.
    Rest(Box<crate::backend::RestPull>),
}

impl From<crate::backend::RestPull> for PullMode {
    fn from(pull: crate::backend::RestPull) -> PullMode {
        PullMode::Rest(Box::new(pull))
    }
}

/// Per-method request configuration of a model. A method left `None` uses
/// the defaults of the wire protocol (`/{endpoint}` and `/{endpoint}/{id}`,
/// bodies and responses as they are).
#[derive(Debug, Clone, Default)]
pub struct RestRequests {
    /// Reading one record (`{id}`) or a page.
    pub get: Option<RestRequest>,
    /// Creating.
    pub post: Option<RestRequest>,
    /// Full update.
    pub put: Option<RestRequest>,
    /// Delta update.
    pub patch: Option<RestRequest>,
    /// Deleting.
    pub delete: Option<RestRequest>,
}

impl RestRequests {
    /// No method configured.
    pub fn new() -> RestRequests {
        RestRequests::default()
    }

    /// The configured request for `method`, if any.
    pub fn get_for(&self, method: RestMethod) -> Option<&RestRequest> {
        self.slot(method).as_ref()
    }

    /// Sets the request for its method, replacing any before.
    #[must_use]
    pub fn with(mut self, request: RestRequest) -> Self {
        let method = request.method;
        *self.slot_mut(method) = Some(request);
        self
    }

    /// The request to send for `method`: the configured one or the default.
    pub fn resolve(&self, method: RestMethod) -> RestRequest {
        self.get_for(method)
            .cloned()
            .unwrap_or_else(|| RestRequest::new(method))
    }

    /// Applies `overrides` on top of `self`, method by method (see [`RestRequest::merged_with`]).
    #[must_use]
    pub fn merged_with(mut self, overrides: &RestRequests) -> RestRequests {
        for method in RestMethod::ALL {
            if let Some(over) = overrides.get_for(method) {
                let base = self.slot_mut(method).take();
                *self.slot_mut(method) = Some(match base {
                    Some(base) => base.merged_with(over),
                    None => over.clone(),
                });
            }
        }
        self
    }

    fn slot(&self, method: RestMethod) -> &Option<RestRequest> {
        match method {
            RestMethod::Get => &self.get,
            RestMethod::Post => &self.post,
            RestMethod::Put => &self.put,
            RestMethod::Patch => &self.patch,
            RestMethod::Delete => &self.delete,
        }
    }

    fn slot_mut(&mut self, method: RestMethod) -> &mut Option<RestRequest> {
        match method {
            RestMethod::Get => &mut self.get,
            RestMethod::Post => &mut self.post,
            RestMethod::Put => &mut self.put,
            RestMethod::Patch => &mut self.patch,
            RestMethod::Delete => &mut self.delete,
        }
    }
}

/// The order of two values of a max-of-field pull cursor: as numbers when both read as
/// numbers, as instants when both read as RFC 3339 timestamps, else as text.
pub(crate) fn cursor_order(a: &str, b: &str) -> std::cmp::Ordering {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        if x.is_finite() && y.is_finite() {
            return x.total_cmp(&y);
        }
    }
    if let (Ok(x), Ok(y)) = (
        chrono::DateTime::parse_from_rfc3339(a.trim()),
        chrono::DateTime::parse_from_rfc3339(b.trim()),
    ) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

/// The cursor after a page: the largest of the page's `values` and the cursor before it, by
/// [`cursor_order`]; `None` when there is neither.
pub(crate) fn newest_cursor(
    values: impl Iterator<Item = String>,
    before: Option<&str>,
) -> Option<String> {
    values
        .chain(before.map(str::to_owned))
        .max_by(|a, b| cursor_order(a, b))
}

/// A scalar as query-parameter text.
fn query_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn has_placeholder(template: &str, name: &str) -> bool {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if &after[..end] == name => return true,
            Some(end) => rest = &after[end + 1..],
            None => return false,
        }
    }
    false
}

fn fill_template(
    template: &str,
    mut value_of: impl FnMut(&str) -> Result<Option<String>, RestError>,
) -> Result<String, RestError> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end =
            after
                .find('}')
                .filter(|&end| end > 0)
                .ok_or_else(|| RestError::MalformedTemplate {
                    template: template.to_owned(),
                })?;
        let name = &after[..end];
        let value = value_of(name)?.ok_or_else(|| RestError::UnfilledPlaceholder {
            template: template.to_owned(),
            name: name.to_owned(),
        })?;
        out.extend(utf8_percent_encode(&value, PATH_SEGMENT));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_absolute(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn join_url(base: &str, path: &str) -> Result<String, RestError> {
    if is_absolute(path) {
        return Ok(path.to_owned());
    }
    if !is_absolute(base) {
        return Err(RestError::BadBaseUrl {
            url: path.to_owned(),
            base: base.to_owned(),
        });
    }
    let base = base.trim_end_matches('/');
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Ok(base.to_owned());
    }
    Ok(format!("{base}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    const BASE: &str = "http://127.0.0.1:8080";

    #[test]
    fn relative_urls_join_with_exactly_one_slash() {
        let req = RestRequest::new(RestMethod::Post);
        for base in ["http://h/api", "http://h/api/", "http://h/api//"] {
            for url in ["todos", "/todos", "//todos"] {
                let req = req.clone().url(url);
                assert_eq!(
                    req.build_url(base, "x", None, None).unwrap(),
                    "http://h/api/todos",
                    "{base} + {url}"
                );
            }
        }
    }

    #[test]
    fn default_url_is_the_endpoint_and_item_methods_append_the_id() {
        let post = RestRequest::new(RestMethod::Post);
        assert_eq!(
            post.build_url(BASE, "todos", None, None).unwrap(),
            "http://127.0.0.1:8080/todos"
        );
        let patch = RestRequest::new(RestMethod::Patch);
        assert_eq!(
            patch.build_url(BASE, "todos", Some("t1"), None).unwrap(),
            "http://127.0.0.1:8080/todos/t1"
        );
    }

    #[test]
    fn absolute_urls_are_kept() {
        let req = RestRequest::new(RestMethod::Get).url("https://other.example/v2/items");
        assert_eq!(
            req.build_url(BASE, "todos", None, None).unwrap(),
            "https://other.example/v2/items"
        );
        let req = RestRequest::new(RestMethod::Get).url("HTTPS://other.example/x");
        assert_eq!(
            req.build_url("not a url", "t", None, None).unwrap(),
            "HTTPS://other.example/x"
        );
    }

    #[test]
    fn placeholders_come_from_parameters_then_record() {
        let req = RestRequest::new(RestMethod::Put)
            .url("lists/{listId}/items/{id}")
            .url_parameter("listId", "from-params");
        let record = obj(json!({"listId": "from-record", "id": "ignored"}));
        assert_eq!(
            req.build_url(BASE, "todos", Some("t 1/x"), Some(&record))
                .unwrap(),
            "http://127.0.0.1:8080/lists/from-params/items/t%201%2Fx"
        );
        let req = RestRequest::new(RestMethod::Get).url("users/{owner}/todos/{n}/{flag}");
        let record = obj(json!({"owner": "ann", "n": 7, "flag": true}));
        assert_eq!(
            req.build_url(BASE, "todos", None, Some(&record)).unwrap(),
            "http://127.0.0.1:8080/users/ann/todos/7/true"
        );
    }

    #[test]
    fn unfilled_placeholder_is_an_error() {
        let req = RestRequest::new(RestMethod::Post).url("databases/{db}/documents");
        let err = req.build_url(BASE, "todos", None, None).unwrap_err();
        assert_eq!(
            err,
            RestError::UnfilledPlaceholder {
                template: "databases/{db}/documents".into(),
                name: "db".into()
            }
        );
        assert!(err.to_string().contains("{db}"), "{err}");
    }

    #[test]
    fn non_scalar_placeholder_and_malformed_template_are_errors() {
        let req = RestRequest::new(RestMethod::Post).url("a/{tags}");
        let record = obj(json!({"tags": ["x"]}));
        assert!(matches!(
            req.build_url(BASE, "t", None, Some(&record)),
            Err(RestError::PlaceholderNotScalar {
                kind: JsonKind::Array,
                ..
            })
        ));
        for template in ["a/{unclosed", "a/{}/b"] {
            let req = RestRequest::new(RestMethod::Post).url(template);
            assert!(matches!(
                req.build_url(BASE, "t", None, None),
                Err(RestError::MalformedTemplate { .. })
            ));
        }
    }

    #[test]
    fn relative_url_without_a_usable_base_is_an_error() {
        let req = RestRequest::new(RestMethod::Post);
        assert!(matches!(
            req.build_url("", "todos", None, None),
            Err(RestError::BadBaseUrl { .. })
        ));
    }

    #[test]
    fn body_is_wrapped_and_supplemented() {
        let data = obj(json!({"title": "a"}));
        let plain = RestRequest::new(RestMethod::Post);
        assert_eq!(plain.shape_body(data.clone()), json!({"title": "a"}));

        let wrapped = RestRequest::new(RestMethod::Post)
            .top_level_key("document")
            .supplemental_top_level_data(obj(json!({"collectionId": "c1", "documentId": "d1"})));
        assert_eq!(
            wrapped.shape_body(data.clone()),
            json!({"document": {"title": "a"}, "collectionId": "c1", "documentId": "d1"})
        );

        let merged = RestRequest::new(RestMethod::Post)
            .supplemental_top_level_data(obj(json!({"source": "app", "title": "not me"})));
        assert_eq!(
            merged.shape_body(data),
            json!({"title": "a", "source": "app"})
        );
    }

    #[test]
    fn supplemental_placeholders_are_filled() {
        let req = RestRequest::new(RestMethod::Post)
            .url_parameter("coll", "c9")
            .supplemental_top_level_data(obj(json!({
                "documentId": "{id}", "collection": "{coll}", "copy": "{title}",
                "missing": "{nope}", "literal": "not {a} placeholder", "n": 1
            })));
        let body = req.shape_body_for(obj(json!({"title": "t"})), Some("d1"));
        assert_eq!(
            body,
            json!({"title": "t", "documentId": "d1", "collection": "c9", "copy": "t",
                   "missing": "{nope}", "literal": "not {a} placeholder", "n": 1})
        );
    }

    #[test]
    fn get_supplemental_entries_are_query_parameters() {
        let req = RestRequest::new(RestMethod::Get)
            .url_parameter("db", "main")
            .supplemental_top_level_data(obj(json!({
                "tenant": "t1", "db": "{db}", "doc": "{id}", "n": 2, "on": true, "limit": 9
            })));
        assert_eq!(req.check_query_supplemental(), Ok(()));
        let taken = vec![("limit".to_owned(), "50".to_owned())];
        assert_eq!(
            req.supplemental_query(Some("x1"), &taken),
            vec![
                ("db".to_owned(), "main".to_owned()),
                ("doc".to_owned(), "x1".to_owned()),
                ("n".to_owned(), "2".to_owned()),
                ("on".to_owned(), "true".to_owned()),
                ("tenant".to_owned(), "t1".to_owned()),
            ]
        );
        for bad in [
            json!({"f": {"a": 1}}),
            json!({"f": [1]}),
            json!({"f": null}),
        ] {
            let req = RestRequest::new(RestMethod::Get).supplemental_top_level_data(obj(bad));
            let err = req.check_query_supplemental().unwrap_err();
            assert!(
                err.contains("`f`") && err.contains("query parameters"),
                "{err}"
            );
        }
    }

    #[test]
    fn response_is_extracted_by_dot_path_then_transformed() {
        let req = RestRequest::new(RestMethod::Get).response_data_key("data.items");
        let body = json!({"data": {"items": [1, 2]}, "meta": {}});
        assert_eq!(req.extract_response(body).unwrap(), json!([1, 2]));

        let req = RestRequest::new(RestMethod::Get)
            .response_data_key("documents.0")
            .response_transformer(|v| json!({"wrapped": v}));
        let body = json!({"documents": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(
            req.extract_response(body).unwrap(),
            json!({"wrapped": {"id": "a"}})
        );

        let plain = RestRequest::new(RestMethod::Get);
        assert_eq!(
            plain.extract_response(json!({"x": 1})).unwrap(),
            json!({"x": 1})
        );
    }

    #[test]
    fn missing_response_key_names_the_segment() {
        let req = RestRequest::new(RestMethod::Get).response_data_key("data.items");
        let err = req
            .extract_response(json!({"data": {"rows": []}}))
            .unwrap_err();
        assert_eq!(
            err,
            RestError::MissingResponseKey {
                path: "data.items".into(),
                missing: "items".into()
            }
        );
        assert!(req.extract_response(json!([1])).is_err());
        let req = RestRequest::new(RestMethod::Get).response_data_key("list.5");
        assert!(req.extract_response(json!({"list": [1]})).is_err());
    }

    #[test]
    fn timeout_retry_and_headers_defaults_and_overrides() {
        let req = RestRequest::new(RestMethod::Get);
        assert_eq!(
            req.effective_timeout(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(req.effective_retry_count(3), 3);
        let req = req
            .timeout(Duration::from_millis(250))
            .retry_count(0)
            .header("X-Api-Key", "k");
        assert_eq!(
            req.effective_timeout(Duration::from_secs(30)),
            Duration::from_millis(250)
        );
        assert_eq!(req.effective_retry_count(3), 0);
        assert_eq!(req.headers.get("X-Api-Key").map(String::as_str), Some("k"));
    }

    #[test]
    fn requests_resolve_and_merge_per_method() {
        let base = RestRequests::new().with(
            RestRequest::new(RestMethod::Post)
                .top_level_key("document")
                .header("A", "1")
                .retry_count(2),
        );
        assert_eq!(
            base.resolve(RestMethod::Post).top_level_key.as_deref(),
            Some("document")
        );
        assert!(base.resolve(RestMethod::Patch).top_level_key.is_none());
        assert!(base.get_for(RestMethod::Delete).is_none());

        let overrides = RestRequests::new()
            .with(
                RestRequest::new(RestMethod::Post)
                    .header("B", "2")
                    .timeout(Duration::from_secs(1)),
            )
            .with(RestRequest::new(RestMethod::Delete).url("trash/{id}"));
        let merged = base.merged_with(&overrides);
        let post = merged.resolve(RestMethod::Post);
        assert_eq!(post.top_level_key.as_deref(), Some("document"));
        assert_eq!(post.headers.len(), 2);
        assert_eq!(post.retry_count, Some(2));
        assert_eq!(post.timeout, Some(Duration::from_secs(1)));
        assert_eq!(
            merged.resolve(RestMethod::Delete).url.as_deref(),
            Some("trash/{id}")
        );
    }

    #[test]
    fn cursor_values_are_ordered_by_number_then_time_then_text() {
        use std::cmp::Ordering::*;
        for (a, b, order) in [
            ("9", "10", Less),
            ("-1", "0", Less),
            ("1.5", "10", Less),
            ("1e3", "999", Greater),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.500Z", Less),
            ("2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00Z", Less),
            ("b", "a", Greater),
        ] {
            assert_eq!(cursor_order(a, b), order, "{a} vs {b}");
            assert_eq!(cursor_order(b, a), order.reverse(), "{b} vs {a}");
        }
        let values = ["9", "10", "8"].map(str::to_owned).into_iter();
        assert_eq!(newest_cursor(values, Some("2")).as_deref(), Some("10"));
        assert_eq!(
            newest_cursor(std::iter::empty(), Some("7")).as_deref(),
            Some("7")
        );
        assert_eq!(newest_cursor(std::iter::empty(), None), None);
    }

    #[test]
    fn explicit_id_placeholder_is_not_appended_twice() {
        let req = RestRequest::new(RestMethod::Delete).url("trash/{id}/now");
        assert_eq!(
            req.build_url(BASE, "todos", Some("x"), None).unwrap(),
            "http://127.0.0.1:8080/trash/x/now"
        );
    }
}
