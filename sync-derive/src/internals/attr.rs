//! Parsing of `#[sync(...)]` attributes and of the `#[serde(...)]` keys that
//! change wire names.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, Lit, LitStr, Token};
use sync_schema::RenameRule;

use super::symbol::*;
use super::Ctxt;

/// A value that may be set once; a second setting is an error at its tokens.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: Symbol,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, name: Symbol) -> Self {
        Attr {
            cx,
            name,
            value: None,
        }
    }

    fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                obj,
                format!(
                    "duplicate sync attribute `{}`: it may appear once",
                    self.name
                ),
            );
        } else {
            self.value = Some(value);
        }
    }

    fn get(self) -> Option<Spanned<T>> {
        self.value.map(|value| Spanned { value })
    }
}

/// A parsed attribute value.
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
}

/// Container-level attributes.
pub(crate) struct Container {
    pub(crate) model_type: Option<Spanned<String>>,
    pub(crate) endpoint: Option<Spanned<String>>,
    pub(crate) table: Option<Spanned<String>>,
    pub(crate) krate: Option<syn::Path>,
    pub(crate) diesel_table: Option<TokenStream>,
    /// `priority = N`: the queue priority of the model's changes.
    pub(crate) priority: Option<i32>,
    pub(crate) rest: Vec<RestMethodAttr>,
    /// `pull = "..."` or `pull(...)`: how the model is pulled.
    pub(crate) pull: Option<super::backend::PullAttr>,
    /// `backend(...)`: how a REST backend treats the model's records.
    pub(crate) backend: Option<super::backend::BackendAttr>,
    pub(crate) rename_all: Option<RenameRule>,
    pub(crate) serde_default: bool,
}

/// One `rest(<method>(...))` entry.
pub(crate) struct RestMethodAttr {
    pub(crate) method: Symbol,
    pub(crate) url: Option<String>,
    pub(crate) url_parameters: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) top_level_key: Option<String>,
    pub(crate) supplemental: Option<String>,
    pub(crate) response_data_key: Option<String>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retry_count: Option<u32>,
    pub(crate) response_transformer: Option<syn::Path>,
    /// `send_as = "PUT"`: the HTTP method this operation goes out with.
    pub(crate) send_as: Option<&'static str>,
}

/// Field-level attributes.
pub(crate) struct Field {
    pub(crate) id: Option<TokenStream>,
    pub(crate) index: bool,
    pub(crate) json: Option<TokenStream>,
    pub(crate) skip: Option<TokenStream>,
    pub(crate) skip_delta: Option<TokenStream>,
    /// `#[sync(encrypted)]`, as written.
    pub(crate) encrypted: Option<TokenStream>,
    pub(crate) column: Option<Spanned<String>>,
    pub(crate) serde_rename: Option<String>,
    pub(crate) serde_default: bool,
    pub(crate) serde_skip_deserializing: bool,
    /// `#[serde(skip)]`, `skip_serializing` or `skip_deserializing`, as written.
    pub(crate) serde_skip: Option<TokenStream>,
    pub(crate) serde_flatten: Option<TokenStream>,
    pub(crate) serde_with: Option<TokenStream>,
}

fn path_text(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Consumes whatever follows a key we do not use: `= expr`, `(...)` or nothing.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream = content.parse()?;
    }
    Ok(())
}

/// Parses `key = "text"`; a value of another kind is reported and skipped.
fn lit_str(
    cx: &Ctxt,
    key: Symbol,
    example: &str,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<Option<LitStr>> {
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` needs a string value, e.g. `{example}`"),
        );
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(Some(s)),
        other => {
            cx.error_spanned_by(
                other,
                format!("expected a string literal for `{key}`, e.g. `{example}`"),
            );
            Ok(None)
        }
    }
}

/// Parses `key = 123`; a value of another kind is reported and skipped.
fn lit_int<N>(
    cx: &Ctxt,
    key: Symbol,
    example: &str,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<Option<N>>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` needs an integer value, e.g. `{example}`"),
        );
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => match int.base10_parse::<N>() {
            Ok(n) => Ok(Some(n)),
            Err(err) => {
                cx.error_spanned_by(int, format!("`{key}`: {err}"));
                Ok(None)
            }
        },
        _ => {
            cx.error_spanned_by(
                &expr,
                format!("expected an integer literal for `{key}`, e.g. `{example}`"),
            );
            Ok(None)
        }
    }
}

/// Parses `key = 123` or `key = -123`; a value of another kind is reported and skipped.
fn signed_int<N>(
    cx: &Ctxt,
    key: Symbol,
    example: &str,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<Option<N>>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` needs an integer value, e.g. `{example}`"),
        );
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    let (negative, int) = match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => (false, int),
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit {
                lit: Lit::Int(int), ..
            }) => (true, int),
            _ => {
                cx.error_spanned_by(
                    &expr,
                    format!("expected an integer literal for `{key}`, e.g. `{example}`"),
                );
                return Ok(None);
            }
        },
        _ => {
            cx.error_spanned_by(
                &expr,
                format!("expected an integer literal for `{key}`, e.g. `{example}`"),
            );
            return Ok(None);
        }
    };
    let digits = int.base10_digits();
    let text = if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    };
    match text.parse::<N>() {
        Ok(n) => Ok(Some(n)),
        Err(err) => {
            cx.error_spanned_by(&expr, format!("`{key}`: {err}"));
            Ok(None)
        }
    }
}

/// Parses a key that takes no value; a value is reported and skipped.
fn flag(cx: &Ctxt, key: Symbol, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        cx.error_spanned_by(
            &meta.path,
            format!("`{key}` takes no value: write `#[sync({key})]`"),
        );
        skip_value(meta)?;
    }
    Ok(())
}

fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn sql_name(cx: &Ctxt, key: Symbol, lit: &LitStr) -> Option<String> {
    let value = lit.value();
    if !is_sql_identifier(&value) {
        cx.error_spanned_by(
            lit,
            format!("`{key}` must be a plain SQL identifier (letters, digits, `_`; not starting with a digit), got {value:?}"),
        );
        return None;
    }
    if value.starts_with('_') {
        cx.error_spanned_by(
            lit,
            format!("`{key}` must not start with `_`: names starting with `_` are reserved for the sync bookkeeping columns and tables"),
        );
        return None;
    }
    Some(value)
}

impl Container {
    pub(crate) fn from_ast(cx: &Ctxt, input: &syn::DeriveInput) -> Container {
        let mut model_type = Attr::none(cx, MODEL_TYPE);
        let mut endpoint = Attr::none(cx, ENDPOINT);
        let mut table = Attr::none(cx, TABLE);
        let mut krate = Attr::none(cx, CRATE);
        let mut diesel_table = Attr::none(cx, DIESEL_TABLE);
        let mut priority = Attr::none(cx, PRIORITY);
        let mut rest: Vec<RestMethodAttr> = Vec::new();
        let mut pull = Attr::none(cx, PULL);
        let mut backend = Attr::none(cx, BACKEND);
        let mut rename_all = None;
        let mut serde_default = false;

        for attr in &input.attrs {
            if attr.path() == SERDE {
                parse_serde_container(cx, attr, &mut rename_all, &mut serde_default);
                continue;
            }
            if attr.path() != SYNC {
                continue;
            }
            if let syn::Meta::Path(_) = attr.meta {
                cx.error_spanned_by(
                    attr,
                    "expected `#[sync(...)]` with keys, e.g. `#[sync(endpoint = \"todos\")]`",
                );
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                if meta.path == MODEL_TYPE {
                    if let Some(s) = lit_str(cx, MODEL_TYPE, "#[sync(model_type = \"todo\")]", &meta)? {
                        if s.value().is_empty() {
                            cx.error_spanned_by(&s, "`model_type` must not be empty");
                        } else {
                            model_type.set(&meta.path, s.value());
                        }
                    }
                } else if meta.path == ENDPOINT {
                    if let Some(s) = lit_str(cx, ENDPOINT, "#[sync(endpoint = \"todos\")]", &meta)? {
                        let value = s.value();
                        if value.is_empty() || value.contains('/') || value.contains('?') || value.contains('{') {
                            cx.error_spanned_by(&s, "`endpoint` is a collection name, not a path: a non-empty name without `/`, `?` or `{`; use `rest(get(url = \"...\"))` for custom URLs");
                        } else {
                            endpoint.set(&meta.path, value);
                        }
                    }
                } else if meta.path == TABLE {
                    if let Some(s) = lit_str(cx, TABLE, "#[sync(table = \"todos\")]", &meta)? {
                        if let Some(name) = sql_name(cx, TABLE, &s) {
                            table.set(&meta.path, name);
                        }
                    }
                } else if meta.path == CRATE {
                    if let Some(s) = lit_str(cx, CRATE, "#[sync(crate = \"offline_sync_kit\")]", &meta)? {
                        match s.parse::<syn::Path>() {
                            Ok(path) => krate.set(&meta.path, path),
                            Err(_) => cx.error_spanned_by(&s, format!("`crate` must be a path such as \"offline_sync_kit\", got {:?}", s.value())),
                        }
                    }
                } else if meta.path == PRIORITY {
                    if let Some(n) = signed_int::<i32>(cx, PRIORITY, "#[sync(priority = 5)]", &meta)? {
                        priority.set(&meta.path, n);
                    }
                } else if meta.path == REST {
                    parse_rest(cx, &meta, &mut rest)?;
                } else if meta.path == PULL {
                    if meta.input.peek(Token![=]) {
                        let lit: Lit = meta.value()?.parse()?;
                        if let Some(mode) = super::backend::pull_mode_named(cx, &lit) {
                            pull.set(&meta.path, mode);
                        }
                    } else if meta.input.peek(syn::token::Paren) {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let items = super::backend::parse_list(&content)?;
                        if let Some(ident) = meta.path.get_ident() {
                            if let Some(mode) = super::backend::pull(cx, ident, &items) {
                                pull.set(&meta.path, mode);
                            }
                        }
                    } else {
                        cx.error_spanned_by(&meta.path, "`pull` is `pull = \"cursor\"`, `pull = \"full_paged\"` or `pull(...)` with a REST pull's options");
                    }
                } else if meta.path == BACKEND {
                    if meta.input.peek(syn::token::Paren) {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let items = super::backend::parse_list(&content)?;
                        if let Some(b) = super::backend::backend(cx, &items) {
                            backend.set(&meta.path, b);
                        }
                    } else {
                        cx.error_spanned_by(&meta.path, "`backend` takes its options in parentheses, e.g. `backend(version = \"etag\", conflict_statuses(412))`");
                        skip_value(&meta)?;
                    }
                } else if meta.path == DIESEL_TABLE {
                    flag(cx, DIESEL_TABLE, &meta)?;
                    diesel_table.set(&meta.path, meta.path.to_token_stream());
                } else {
                    cx.error_spanned_by(
                        &meta.path,
                        format!(
                            "unknown sync container attribute `{}`, expected one of {}",
                            path_text(&meta.path),
                            one_of(CONTAINER_KEYS)
                        ),
                    );
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }

        Container {
            model_type: model_type.get(),
            endpoint: endpoint.get(),
            table: table.get(),
            krate: krate.get().map(|s| s.value),
            diesel_table: diesel_table.get().map(|s| s.value),
            priority: priority.get().map(|s| s.value),
            rest,
            pull: pull.get().map(|s| s.value),
            backend: backend.get().map(|s| s.value),
            rename_all,
            serde_default,
        }
    }
}

fn parse_rest(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    rest: &mut Vec<RestMethodAttr>,
) -> syn::Result<()> {
    if !meta.input.peek(syn::token::Paren) {
        cx.error_spanned_by(
            &meta.path,
            "`rest` lists methods: `#[sync(rest(post(top_level_key = \"document\")))]`",
        );
        return skip_value(meta);
    }
    meta.parse_nested_meta(|method_meta| {
        let Some(method) = REST_METHODS
            .iter()
            .find(|m| method_meta.path == **m)
            .copied()
        else {
            cx.error_spanned_by(
                &method_meta.path,
                format!(
                    "unknown REST method `{}`, expected one of {}",
                    path_text(&method_meta.path),
                    one_of(REST_METHODS)
                ),
            );
            return skip_value(&method_meta);
        };
        if rest.iter().any(|r| r.method.0 == method.0) {
            cx.error_spanned_by(
                &method_meta.path,
                format!("duplicate REST method `{method}`: put all of its options in one `{method}(...)`"),
            );
            return skip_value(&method_meta);
        }
        let mut url = Attr::none(cx, URL);
        let mut top_level_key = Attr::none(cx, TOP_LEVEL_KEY);
        let mut supplemental = Attr::none(cx, SUPPLEMENTAL);
        let mut response_data_key = Attr::none(cx, RESPONSE_DATA_KEY);
        let mut timeout_ms = Attr::none(cx, TIMEOUT_MS);
        let mut retry_count = Attr::none(cx, RETRY_COUNT);
        let mut transformer = Attr::none(cx, RESPONSE_TRANSFORMER);
        let mut send_as = Attr::none(cx, SEND_AS);
        let mut url_parameters = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        if !method_meta.input.peek(syn::token::Paren) {
            cx.error_spanned_by(
                &method_meta.path,
                format!("`{method}` needs its options in parentheses, e.g. `{method}(url = \"items\")`"),
            );
            return skip_value(&method_meta);
        }
        method_meta.parse_nested_meta(|opt| {
            if opt.path == URL {
                if let Some(s) = lit_str(cx, URL, "url = \"databases/{db}/documents\"", &opt)? {
                    check_template(cx, &s);
                    url.set(&opt.path, s.value());
                }
            } else if opt.path == TOP_LEVEL_KEY {
                if let Some(s) = lit_str(cx, TOP_LEVEL_KEY, "top_level_key = \"document\"", &opt)? {
                    top_level_key.set(&opt.path, s.value());
                }
            } else if opt.path == RESPONSE_DATA_KEY {
                if let Some(s) = lit_str(cx, RESPONSE_DATA_KEY, "response_data_key = \"data.items\"", &opt)? {
                    let value = s.value();
                    if value.is_empty() || value.split('.').any(str::is_empty) {
                        cx.error_spanned_by(&s, "`response_data_key` is a dot path of non-empty keys, e.g. \"data.items\"");
                    } else {
                        response_data_key.set(&opt.path, value);
                    }
                }
            } else if opt.path == SUPPLEMENTAL {
                if let Some(s) = lit_str(cx, SUPPLEMENTAL, "supplemental = r#\"{\"collectionId\": \"c1\"}\"#", &opt)? {
                    match serde_json::from_str::<serde_json::Value>(&s.value()) {
                        Ok(serde_json::Value::Object(map)) if method.0 == GET.0 => {
                            match map.iter().find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean())) {
                                Some((key, _)) => cx.error_spanned_by(&s, format!("`get(supplemental)` entries are sent as query parameters, so each value must be a string, number or boolean; `{key}` is not")),
                                None => supplemental.set(&opt.path, s.value()),
                            }
                        }
                        Ok(serde_json::Value::Object(_)) => supplemental.set(&opt.path, s.value()),
                        Ok(_) => cx.error_spanned_by(&s, "`supplemental` must be a JSON object, e.g. r#\"{\"collectionId\": \"c1\"}\"#"),
                        Err(err) => cx.error_spanned_by(&s, format!("`supplemental` is not valid JSON: {err}; write a JSON object, e.g. r#\"{{\"collectionId\": \"c1\"}}\"#")),
                    }
                }
            } else if opt.path == TIMEOUT_MS {
                if let Some(n) = lit_int::<u64>(cx, TIMEOUT_MS, "timeout_ms = 5000", &opt)? {
                    timeout_ms.set(&opt.path, n);
                }
            } else if opt.path == RETRY_COUNT {
                if let Some(n) = lit_int::<u32>(cx, RETRY_COUNT, "retry_count = 3", &opt)? {
                    retry_count.set(&opt.path, n);
                }
            } else if opt.path == HEADER {
                if let Some(s) = lit_str(cx, HEADER, "header = \"X-Api-Key: secret\"", &opt)? {
                    match s.value().split_once(':') {
                        Some((name, value)) if is_header_name(name.trim()) => {
                            let name = name.trim().to_owned();
                            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                                cx.error_spanned_by(&s, format!("duplicate header `{name}`"));
                            } else {
                                headers.push((name, value.trim().to_owned()));
                            }
                        }
                        _ => cx.error_spanned_by(&s, "`header` is written as \"Name: value\", e.g. header = \"X-Api-Key: secret\""),
                    }
                }
            } else if opt.path == URL_PARAMETERS {
                if !opt.input.peek(syn::token::Paren) {
                    cx.error_spanned_by(&opt.path, "`url_parameters` lists name = \"value\" pairs: `url_parameters(databaseId = \"main\")`");
                    return skip_value(&opt);
                }
                opt.parse_nested_meta(|param| {
                    let name = path_text(&param.path);
                    if let Some(s) = lit_str(cx, URL_PARAMETERS, "url_parameters(databaseId = \"main\")", &param)? {
                        if url_parameters.iter().any(|(n, _): &(String, String)| *n == name) {
                            cx.error_spanned_by(&param.path, format!("duplicate url parameter `{name}`"));
                        } else {
                            url_parameters.push((name, s.value()));
                        }
                    }
                    Ok(())
                })?;
            } else if opt.path == SEND_AS {
                if let Some(s) = lit_str(cx, SEND_AS, "send_as = \"PUT\"", &opt)? {
                    let sent = ["GET", "POST", "PUT", "PATCH", "DELETE"]
                        .into_iter()
                        .find(|m| m.eq_ignore_ascii_case(&s.value()));
                    let fits = |m: &str| match method.0 {
                        "get" => m == "GET",
                        "post" => m == "POST" || m == "PUT",
                        "put" | "patch" => m == "PUT" || m == "PATCH" || m == "POST",
                        _ => m == "DELETE" || m == "POST",
                    };
                    match sent {
                        Some(m) if fits(m) => send_as.set(&opt.path, m),
                        Some(m) => cx.error_spanned_by(&s, format!("`{method}` cannot be sent as {m}")),
                        None => cx.error_spanned_by(&s, "`send_as` is an HTTP method: \"POST\", \"PUT\", \"PATCH\" or \"DELETE\""),
                    }
                }
            } else if opt.path == RESPONSE_TRANSFORMER {
                if let Some(s) = lit_str(cx, RESPONSE_TRANSFORMER, "response_transformer = \"crate::api::unwrap_page\"", &opt)? {
                    match s.parse::<syn::Path>() {
                        Ok(path) => transformer.set(&opt.path, path),
                        Err(_) => cx.error_spanned_by(&s, "`response_transformer` names a function `fn(serde_json::Value) -> serde_json::Value` by path, e.g. \"crate::api::unwrap_page\""),
                    }
                }
            } else {
                cx.error_spanned_by(
                    &opt.path,
                    format!(
                        "unknown option `{}` for REST method `{method}`, expected one of {}",
                        path_text(&opt.path),
                        one_of(REST_KEYS)
                    ),
                );
                skip_value(&opt)?;
            }
            Ok(())
        })?;
        rest.push(RestMethodAttr {
            method,
            url: url.get().map(|s| s.value),
            url_parameters,
            headers,
            top_level_key: top_level_key.get().map(|s| s.value),
            supplemental: supplemental.get().map(|s| s.value),
            response_data_key: response_data_key.get().map(|s| s.value),
            timeout_ms: timeout_ms.get().map(|s| s.value),
            retry_count: retry_count.get().map(|s| s.value),
            response_transformer: transformer.get().map(|s| s.value),
            send_as: send_as.get().map(|s| s.value),
        });
        Ok(())
    })
}

pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_template(cx: &Ctxt, lit: &LitStr) {
    let value = lit.value();
    let mut rest = value.as_str();
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if end > 0 && !after[..end].contains('{') => rest = &after[end + 1..],
            _ => {
                cx.error_spanned_by(
                    lit,
                    "URL template has an unclosed or empty `{`; placeholders look like `{databaseId}`",
                );
                return;
            }
        }
    }
}

fn parse_serde_container(
    cx: &Ctxt,
    attr: &syn::Attribute,
    rename_all: &mut Option<RenameRule>,
    default: &mut bool,
) {
    // Malformed serde attributes are reported by serde's own derive.
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path == RENAME_ALL {
            // A split or one-sided rule would give serialised and deserialised records
            // different keys; that one is ours to report.
            match serde_name(&meta) {
                Ok(name) => {
                    if let Some(rule) = name.and_then(|s| RenameRule::parse(&s)) {
                        *rename_all = Some(rule);
                    }
                }
                Err(err) => cx.syn_error(err),
            }
        } else if meta.path == DEFAULT {
            *default = true;
            skip_value(&meta)?;
        } else {
            skip_value(&meta)?;
        }
        Ok(())
    });
}

/// Reads `key = "x"` or `key(serialize = "x", deserialize = "y")`; the two
/// must agree for the schema to have one wire name.
fn serde_name(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<String>> {
    if meta.input.peek(Token![=]) {
        let s: LitStr = meta.value()?.parse()?;
        return Ok(Some(s.value()));
    }
    let mut ser = None;
    let mut de = None;
    meta.parse_nested_meta(|inner| {
        let s: LitStr = inner.value()?.parse()?;
        if inner.path == SERIALIZE {
            ser = Some(s.value());
        } else if inner.path == DESERIALIZE {
            de = Some(s.value());
        }
        Ok(())
    })?;
    match (ser, de) {
        (Some(s), Some(d)) if s == d => Ok(Some(s)),
        (None, None) => Ok(None),
        _ => Err(meta.error(
            "SyncModel needs one wire name per field: serde's `serialize` and `deserialize` names must be the same",
        )),
    }
}

impl Field {
    pub(crate) fn from_ast(cx: &Ctxt, field: &syn::Field) -> Field {
        let mut id = Attr::none(cx, ID);
        let mut index = Attr::none(cx, INDEX);
        let mut json = Attr::none(cx, JSON);
        let mut skip = Attr::none(cx, SKIP);
        let mut skip_delta = Attr::none(cx, SKIP_DELTA);
        let mut encrypted = Attr::none(cx, ENCRYPTED);
        let mut column = Attr::none(cx, COLUMN);
        let mut serde_rename = None;
        let mut serde_default = false;
        let mut serde_skip_deserializing = false;
        let mut serde_skip = None;
        let mut serde_flatten = None;
        let mut serde_with = None;

        for attr in &field.attrs {
            if attr.path() == SERDE {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path == RENAME {
                        match serde_name(&meta) {
                            Ok(name) => serde_rename = name.or(serde_rename.take()),
                            Err(err) => cx.syn_error(err),
                        }
                    } else if meta.path == DEFAULT {
                        serde_default = true;
                        skip_value(&meta)?;
                    } else if meta.path == SKIP || meta.path == SKIP_DESERIALIZING {
                        serde_skip_deserializing = true;
                        serde_skip = Some(meta.path.to_token_stream());
                    } else if meta.path == SKIP_SERIALIZING {
                        serde_skip = Some(meta.path.to_token_stream());
                    } else if meta.path == FLATTEN {
                        serde_flatten = Some(meta.path.to_token_stream());
                    } else if meta.path == WITH
                        || meta.path == SERIALIZE_WITH
                        || meta.path == DESERIALIZE_WITH
                    {
                        serde_with = Some(meta.path.to_token_stream());
                        skip_value(&meta)?;
                    } else {
                        skip_value(&meta)?;
                    }
                    Ok(())
                });
                // Malformed serde attributes are reported by serde's own derive.
                drop(result);
                continue;
            }
            if attr.path() != SYNC {
                continue;
            }
            if let syn::Meta::Path(_) = attr.meta {
                cx.error_spanned_by(
                    attr,
                    "expected `#[sync(...)]` with keys, e.g. `#[sync(id)]`",
                );
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                let key = FIELD_KEYS.iter().find(|k| meta.path == **k).copied();
                match key {
                    Some(k) if k.0 == COLUMN.0 => {
                        if let Some(s) = lit_str(cx, COLUMN, "#[sync(column = \"due_at\")]", &meta)?
                        {
                            if let Some(name) = sql_name(cx, COLUMN, &s) {
                                column.set(&meta.path, name);
                            }
                        }
                    }
                    Some(k) if k.0 == ENCRYPTED.0 => {
                        flag(cx, ENCRYPTED, &meta)?;
                        encrypted.set(&meta.path, meta.path.to_token_stream());
                    }
                    Some(k) => {
                        flag(cx, k, &meta)?;
                        let target = match k.0 {
                            "id" => &mut id,
                            "index" => &mut index,
                            "json" => &mut json,
                            "skip" => &mut skip,
                            _ => &mut skip_delta,
                        };
                        target.set(&meta.path, meta.path.to_token_stream());
                    }
                    None => {
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "unknown sync field attribute `{}`, expected one of {}",
                                path_text(&meta.path),
                                one_of(FIELD_KEYS)
                            ),
                        );
                        skip_value(&meta)?;
                    }
                }
                Ok(())
            });
            if let Err(err) = result {
                cx.syn_error(err);
            }
        }

        Field {
            id: id.get().map(|s| s.value),
            index: index.get().is_some(),
            json: json.get().map(|s| s.value),
            skip: skip.get().map(|s| s.value),
            skip_delta: skip_delta.get().map(|s| s.value),
            encrypted: encrypted.get().map(|s| s.value),
            column: column.get(),
            serde_rename,
            serde_default,
            serde_skip_deserializing,
            serde_skip,
            serde_flatten,
            serde_with,
        }
    }
}
