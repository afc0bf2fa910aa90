//! `#[sync(pull(...))]` and `#[sync(backend(...))]`: how a model is pulled from, and how its
//! records are versioned, conflicted, replayed and keyed by, a REST backend that is not
//! sync-server. The options nest several levels deep, so they are first read into a small
//! tree of `key`, `key = literal`, `key(...)` and bare literals, then interpreted key by key
//! with every mistake reported at its own tokens.
//!
//! Interpretation yields the code that builds the runtime values (`RestPull` inside a
//! `PullMode`, `RestBackend`), written against `__rt`, which the generated function binds to
//! the runtime path. Everything that can be checked without the runtime is checked here;
//! the manager's build checks the rest again (the same rules apply to values set at run time).

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, Lit, Token};

use super::Ctxt;

/// One item of a nested option list.
pub(crate) struct Node {
    key: Option<Ident>,
    value: NodeValue,
}

enum NodeValue {
    /// `key` alone.
    Flag,
    /// `key = literal`, or a bare literal in a list.
    Lit(Lit),
    /// `key(...)`.
    List(Vec<Node>),
}

impl Parse for Node {
    fn parse(input: ParseStream<'_>) -> syn::Result<Node> {
        if input.peek(Lit) {
            return Ok(Node {
                key: None,
                value: NodeValue::Lit(input.parse()?),
            });
        }
        let key = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            NodeValue::Lit(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            NodeValue::List(parse_list(&content)?)
        } else {
            NodeValue::Flag
        };
        Ok(Node {
            key: Some(key),
            value,
        })
    }
}

/// Comma-separated nodes.
pub(crate) fn parse_list(input: ParseStream<'_>) -> syn::Result<Vec<Node>> {
    Ok(Punctuated::<Node, Token![,]>::parse_terminated(input)?
        .into_iter()
        .collect())
}

impl ToTokens for Node {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        if let Some(key) = &self.key {
            key.to_tokens(tokens);
        }
        if let NodeValue::Lit(lit) = &self.value {
            lit.to_tokens(tokens);
        }
    }
}

impl Node {
    fn name(&self) -> String {
        self.key.as_ref().map(Ident::to_string).unwrap_or_default()
    }

    /// The string of `key = "..."`.
    fn string(&self, cx: &Ctxt, example: &str) -> Option<String> {
        match &self.value {
            NodeValue::Lit(Lit::Str(s)) => Some(s.value()),
            _ => {
                cx.error_spanned_by(
                    self,
                    format!("`{}` takes a string, e.g. `{example}`", self.name()),
                );
                None
            }
        }
    }

    /// A non-empty string.
    fn text(&self, cx: &Ctxt, example: &str) -> Option<String> {
        let value = self.string(cx, example)?;
        if value.is_empty() {
            cx.error_spanned_by(self, format!("`{}` must not be empty", self.name()));
            return None;
        }
        Some(value)
    }

    /// A dot path of non-empty keys (`results`, `data.items`).
    fn dot_path(&self, cx: &Ctxt, example: &str) -> Option<String> {
        let value = self.string(cx, example)?;
        if value.is_empty() || value.split('.').any(str::is_empty) {
            cx.error_spanned_by(
                self,
                format!(
                    "`{}` is a dot path of non-empty keys, e.g. `{example}`",
                    self.name()
                ),
            );
            return None;
        }
        Some(value)
    }

    /// An HTTP header name.
    fn header(&self, cx: &Ctxt, example: &str) -> Option<String> {
        let value = self.string(cx, example)?;
        if !super::attr::is_header_name(&value) {
            cx.error_spanned_by(
                self,
                format!("`{}`: {value:?} is not an HTTP header name", self.name()),
            );
            return None;
        }
        Some(value)
    }

    /// The items of `key(...)`.
    fn list(&self, cx: &Ctxt, example: &str) -> Option<&[Node]> {
        match &self.value {
            NodeValue::List(items) => Some(items),
            _ => {
                cx.error_spanned_by(
                    self,
                    format!("`{}` takes a list, e.g. `{example}`", self.name()),
                );
                None
            }
        }
    }

    /// `key = false`: turned off.
    fn is_false(&self) -> bool {
        matches!(&self.value, NodeValue::Lit(Lit::Bool(b)) if !b.value)
    }
}

/// A literal as JSON (string, integer or boolean): a bare one in a list, or the value of
/// `key = literal`.
fn json_literal(cx: &Ctxt, node: &Node, what: &str) -> Option<serde_json::Value> {
    let value = match &node.value {
        NodeValue::Lit(Lit::Str(s)) => serde_json::Value::String(s.value()),
        NodeValue::Lit(Lit::Bool(b)) => serde_json::Value::Bool(b.value),
        NodeValue::Lit(Lit::Int(i)) => match i.base10_parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(err) => {
                cx.error_spanned_by(node, format!("{what}: {err}"));
                return None;
            }
        },
        _ => {
            cx.error_spanned_by(
                node,
                format!("{what} is a string, integer or boolean literal"),
            );
            return None;
        }
    };
    Some(value)
}

/// The options of one list, looked up by key: unknown keys and keys given twice are
/// reported once each.
struct Options<'a> {
    nodes: Vec<&'a Node>,
}

impl<'a> Options<'a> {
    fn read(
        cx: &Ctxt,
        items: &'a [Node],
        within: &str,
        known: &[&str],
        repeatable: &[&str],
    ) -> Options<'a> {
        let mut nodes: Vec<&'a Node> = Vec::new();
        for item in items {
            let Some(key) = &item.key else {
                cx.error_spanned_by(
                    item,
                    format!(
                        "`{within}` takes named options ({}), not a bare value",
                        names(known)
                    ),
                );
                continue;
            };
            let name = key.to_string();
            if !known.contains(&name.as_str()) {
                cx.error_spanned_by(
                    key,
                    format!(
                        "unknown option `{name}` in `{within}`, expected one of {}",
                        names(known)
                    ),
                );
                continue;
            }
            if !repeatable.contains(&name.as_str()) && nodes.iter().any(|n| n.name() == name) {
                cx.error_spanned_by(
                    key,
                    format!("duplicate option `{name}` in `{within}`: it may appear once"),
                );
                continue;
            }
            nodes.push(item);
        }
        Options { nodes }
    }

    fn get(&self, key: &str) -> Option<&'a Node> {
        self.nodes.iter().copied().find(|n| n.name() == key)
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &'a Node> + '_ {
        let key = key.to_owned();
        self.nodes.iter().copied().filter(move |n| n.name() == key)
    }

    /// A required option.
    fn need(&self, cx: &Ctxt, anchor: &Node, key: &str, example: &str) -> Option<&'a Node> {
        let found = self.get(key);
        if found.is_none() {
            cx.error_spanned_by(
                anchor,
                format!("`{}` needs `{key}`, e.g. `{example}`", anchor.name()),
            );
        }
        found
    }
}

fn names(known: &[&str]) -> String {
    let quoted: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    quoted.join(", ")
}

/// A record field named by an option, checked against the model's wire names later.
pub(crate) struct FieldRef {
    pub(crate) wire_name: String,
    pub(crate) tokens: TokenStream,
    pub(crate) what: &'static str,
}

/// `pull = "..."` or `pull(...)`: an expression of type `PullMode`.
pub(crate) struct PullAttr {
    pub(crate) expr: TokenStream,
}

/// `backend(...)`: statements that set up `backend`, a `RestBackend`.
pub(crate) struct BackendAttr {
    pub(crate) statements: TokenStream,
    pub(crate) fields: Vec<FieldRef>,
}

const TIME_FORMATS: &[(&str, &str)] = &[
    ("as_received", "AsReceived"),
    ("iso8601", "Iso8601"),
    ("epoch_millis", "EpochMillis"),
    ("epoch_seconds", "EpochSeconds"),
];

fn time_format(cx: &Ctxt, node: &Node) -> Option<TokenStream> {
    let value = node.string(cx, "format = \"iso8601\"")?;
    match TIME_FORMATS.iter().find(|(name, _)| *name == value) {
        Some((_, variant)) => {
            let variant = Ident::new(variant, proc_macro2::Span::call_site());
            Some(quote!(__rt::TimeFormat::#variant))
        }
        None => {
            let known: Vec<&str> = TIME_FORMATS.iter().map(|(n, _)| *n).collect();
            cx.error_spanned_by(
                node,
                format!(
                    "unknown time format {value:?}, expected one of {}",
                    names(&known)
                ),
            );
            None
        }
    }
}

/// `pull = "cursor" | "full_paged"` (the string form).
pub(crate) fn pull_mode_named(cx: &Ctxt, lit: &Lit) -> Option<PullAttr> {
    let Lit::Str(s) = lit else {
        cx.error_spanned_by(
            lit,
            "`pull` is `pull = \"cursor\"`, `pull = \"full_paged\"` or `pull(...)` with a REST pull's options",
        );
        return None;
    };
    let expr = match s.value().as_str() {
        "cursor" => quote!(__rt::PullMode::Cursor),
        "full_paged" => quote!(__rt::PullMode::FullPaged),
        other => {
            cx.error_spanned_by(
                s,
                format!("unknown pull mode {other:?}: `cursor` (sync-server's protocol) or `full_paged`; a REST API's paging is written `pull(paging(...), next_page(...), ...)`"),
            );
            return None;
        }
    };
    Some(PullAttr { expr })
}

/// The kind of paging, for the check against the signal.
#[derive(Clone, Copy, PartialEq)]
enum PagingKind {
    None,
    PageOrOffset,
    Cursor,
    NextUrl,
    Keyset,
}

#[derive(Clone, Copy, PartialEq)]
enum NextKind {
    Never,
    LinkHeader,
    Header,
    BodyUrl,
    BodyCursor,
    TotalCount,
    FullPage,
}

/// `pull(...)`: a `PullMode::Rest`.
pub(crate) fn pull(cx: &Ctxt, anchor: &Ident, items: &[Node]) -> Option<PullAttr> {
    let known = [
        "since",
        "sort",
        "paging",
        "next_page",
        "parameter",
        "records_at",
    ];
    let opts = Options::read(cx, items, "pull", &known, &["parameter"]);
    let errors_before = cx.error_count();
    let mut sets = Vec::new();

    let mut has_since = false;
    if let Some(node) = opts.get("since") {
        has_since = true;
        if let Some(since) = since(cx, node) {
            sets.push(quote!(pull = pull.since(#since);));
        }
    }
    if let Some(node) = opts.get("sort") {
        let example = "sort(param = \"order\", value = \"updatedAt\")";
        if let Some(items) = node.list(cx, example) {
            let o = Options::read(cx, items, "sort", &["param", "value"], &[]);
            let param = o
                .need(cx, node, "param", example)
                .and_then(|n| n.text(cx, example));
            let value = o
                .need(cx, node, "value", example)
                .and_then(|n| n.text(cx, example));
            if let (Some(param), Some(value)) = (param, value) {
                sets.push(quote!(pull = pull.sort(#param, #value);));
            }
        }
    }
    let mut paging_kind = PagingKind::None;
    if let Some(node) = opts.get("paging") {
        if let Some((kind, expr)) = paging(cx, node) {
            paging_kind = kind;
            sets.push(quote!(pull = pull.paging(#expr);));
        }
    }
    let mut next_kind = NextKind::Never;
    if let Some(node) = opts.get("next_page") {
        if let Some((kind, expr)) = next_page(cx, node) {
            next_kind = kind;
            sets.push(quote!(pull = pull.next_page(#expr);));
        }
    }
    for node in opts.all("parameter") {
        let example = "parameter(name = \"count\", value = \"1\")";
        if let Some(items) = node.list(cx, example) {
            let o = Options::read(cx, items, "parameter", &["name", "value"], &[]);
            let name = o
                .need(cx, node, "name", example)
                .and_then(|n| n.text(cx, example));
            let value = o
                .need(cx, node, "value", example)
                .and_then(|n| n.string(cx, example));
            if let (Some(name), Some(value)) = (name, value) {
                sets.push(quote!(pull = pull.parameter(#name, #value);));
            }
        }
    }
    if let Some(node) = opts.get("records_at") {
        if let Some(path) = node.dot_path(cx, "records_at = \"results\"") {
            sets.push(quote!(pull = pull.records_at(#path);));
        }
    }

    if cx.error_count() == errors_before {
        if let Err(message) = paging_fits(paging_kind, next_kind, has_since) {
            cx.error_spanned_by(anchor, message);
        }
    }
    if cx.error_count() != errors_before {
        return None;
    }
    Some(PullAttr {
        expr: quote!({
            let mut pull = __rt::RestPull::new();
            #(#sets)*
            <__rt::PullMode as ::std::convert::From<__rt::RestPull>>::from(pull)
        }),
    })
}

/// The same rule as the runtime's check of a `RestPull`.
fn paging_fits(paging: PagingKind, next: NextKind, has_since: bool) -> Result<(), String> {
    use NextKind as N;
    let fits = match (paging, next) {
        (PagingKind::None, N::Never) => true,
        (PagingKind::None, _) => {
            return Err(
                "`next_page` is followed only with a paging scheme: add `paging(...)`".into(),
            )
        }
        (_, N::Never) => {
            return Err(
                "a paging scheme needs `next_page`: the signal that more pages follow".into(),
            )
        }
        (PagingKind::PageOrOffset, n) => matches!(
            n,
            N::TotalCount | N::FullPage | N::LinkHeader | N::Header | N::BodyUrl
        ),
        (PagingKind::Cursor, n) => matches!(n, N::BodyCursor | N::Header),
        (PagingKind::NextUrl, n) => matches!(n, N::LinkHeader | N::Header | N::BodyUrl),
        (PagingKind::Keyset, n) => {
            if !has_since {
                return Err(
                    "`paging(keyset(..))` pages on the `since` field: add `since(...)`".into(),
                );
            }
            matches!(n, N::FullPage | N::TotalCount)
        }
    };
    if fits {
        Ok(())
    } else {
        Err("this `paging` cannot follow this `next_page`: a page number or offset follows a total count, a full page or a next URL; a cursor follows a body cursor or a header; `next_url` follows a link; keyset follows a full page or a total count".into())
    }
}

fn since(cx: &Ctxt, node: &Node) -> Option<TokenStream> {
    let example = "since(field = \"updatedAt\", param = \"updatedAt_gte\")";
    let items = node.list(cx, example)?;
    let o = Options::read(
        cx,
        items,
        "since",
        &["field", "param", "template", "format", "initial"],
        &[],
    );
    let field = o
        .need(cx, node, "field", example)
        .and_then(|n| n.text(cx, example));
    let param = o
        .need(cx, node, "param", example)
        .and_then(|n| n.text(cx, example));
    let mut out = TokenStream::new();
    if let Some(n) = o.get("template") {
        if let Some(template) = n.string(
            cx,
            "template = r#\"{\"updatedAt\":{\"$gte\":\"{since}\"}}\"#",
        ) {
            if template.contains("{since}") {
                out.extend(quote!(.template(#template)));
            } else {
                cx.error_spanned_by(n, "the `since` template has no `{since}` for the bound");
            }
        }
    }
    if let Some(format) = o.get("format").and_then(|n| time_format(cx, n)) {
        out.extend(quote!(.format(#format)));
    }
    if let Some(initial) = o
        .get("initial")
        .and_then(|n| n.text(cx, "initial = \"1970-01-01T00:00:00.000Z\""))
    {
        out.extend(quote!(.initial(#initial)));
    }
    let (field, param) = (field?, param?);
    Some(quote!(__rt::Since::new(#field, #param) #out))
}

fn paging(cx: &Ctxt, node: &Node) -> Option<(PagingKind, TokenStream)> {
    let example = "paging(offset(offset = \"skip\", limit = \"limit\"))";
    if let NodeValue::Lit(Lit::Str(s)) = &node.value {
        if s.value() == "none" {
            return Some((PagingKind::None, quote!(__rt::Paging::None)));
        }
    }
    let items = node.list(cx, example)?;
    let [scheme] = items else {
        cx.error_spanned_by(
            node,
            format!("`paging` holds exactly one scheme (`page_number`, `offset`, `cursor`, `next_url` or `keyset`), e.g. `{example}`"),
        );
        return None;
    };
    let no_items: &[Node] = &[];
    let inner = match &scheme.value {
        NodeValue::List(items) => items.as_slice(),
        NodeValue::Flag => no_items,
        NodeValue::Lit(_) => {
            cx.error_spanned_by(
                scheme,
                format!("a paging scheme takes its parameters in parentheses, e.g. `{example}`"),
            );
            return None;
        }
    };
    let text = |o: &Options<'_>, key: &str, example: &str| {
        o.need(cx, scheme, key, example)
            .and_then(|n| n.text(cx, example))
    };
    let optional = |o: &Options<'_>, key: &str, example: &str| -> Result<TokenStream, ()> {
        match o.get(key) {
            None => Ok(quote!(::std::option::Option::None)),
            Some(n) => match n.text(cx, example) {
                Some(v) => Ok(quote!(::std::option::Option::Some(__rt::ToString::to_string(#v)))),
                None => Err(()),
            },
        }
    };
    match scheme.name().as_str() {
        "page_number" => {
            let ex = "page_number(page = \"_page\", size = \"_limit\", first = 1)";
            let o = Options::read(cx, inner, "page_number", &["page", "size", "first"], &[]);
            let page = text(&o, "page", ex);
            let size = text(&o, "size", ex);
            let first: u64 = match o.get("first") {
                None => 1,
                Some(n) => match &n.value {
                    NodeValue::Lit(Lit::Int(i)) => match i.base10_parse::<u64>() {
                        Ok(v) => v,
                        Err(err) => {
                            cx.error_spanned_by(n, format!("`first`: {err}"));
                            return None;
                        }
                    },
                    _ => {
                        cx.error_spanned_by(
                            n,
                            "`first` is the number of the first page, e.g. `first = 1`",
                        );
                        return None;
                    }
                },
            };
            let (page, size) = (page?, size?);
            Some((
                PagingKind::PageOrOffset,
                quote!(__rt::Paging::PageNumber {
                    page_param: __rt::ToString::to_string(#page),
                    size_param: __rt::ToString::to_string(#size),
                    first: #first,
                }),
            ))
        }
        "offset" => {
            let ex = "offset(offset = \"skip\", limit = \"limit\")";
            let o = Options::read(cx, inner, "offset", &["offset", "limit"], &[]);
            let (offset, limit) = (text(&o, "offset", ex), text(&o, "limit", ex));
            let (offset, limit) = (offset?, limit?);
            Some((
                PagingKind::PageOrOffset,
                quote!(__rt::Paging::Offset {
                    offset_param: __rt::ToString::to_string(#offset),
                    limit_param: __rt::ToString::to_string(#limit),
                }),
            ))
        }
        "cursor" => {
            let ex = "cursor(param = \"cursor\", limit = \"limit\")";
            let o = Options::read(cx, inner, "cursor", &["param", "limit"], &[]);
            let param = text(&o, "param", ex);
            let limit = optional(&o, "limit", ex).ok()?;
            let param = param?;
            Some((
                PagingKind::Cursor,
                quote!(__rt::Paging::Cursor {
                    cursor_param: __rt::ToString::to_string(#param),
                    limit_param: #limit,
                }),
            ))
        }
        "next_url" => {
            let ex = "next_url(limit = \"per_page\")";
            let o = Options::read(cx, inner, "next_url", &["limit"], &[]);
            let limit = optional(&o, "limit", ex).ok()?;
            Some((
                PagingKind::NextUrl,
                quote!(__rt::Paging::NextUrl { limit_param: #limit }),
            ))
        }
        "keyset" => {
            let ex = "keyset(limit = \"limit\", skip = \"skip\")";
            let o = Options::read(cx, inner, "keyset", &["limit", "skip"], &[]);
            let (limit, skip) = (text(&o, "limit", ex), text(&o, "skip", ex));
            let (limit, skip) = (limit?, skip?);
            Some((
                PagingKind::Keyset,
                quote!(__rt::Paging::Keyset {
                    limit_param: __rt::ToString::to_string(#limit),
                    skip_param: __rt::ToString::to_string(#skip),
                }),
            ))
        }
        other => {
            cx.error_spanned_by(
                scheme,
                format!("unknown paging scheme `{other}`, expected one of `page_number`, `offset`, `cursor`, `next_url`, `keyset` (or `paging = \"none\"`)"),
            );
            None
        }
    }
}

fn next_page(cx: &Ctxt, node: &Node) -> Option<(NextKind, TokenStream)> {
    let example = "next_page(header = \"Next-Page\")";
    if let NodeValue::Lit(Lit::Str(s)) = &node.value {
        return match s.value().as_str() {
            "never" => Some((NextKind::Never, quote!(__rt::NextPage::Never))),
            "link_header" => Some((NextKind::LinkHeader, quote!(__rt::NextPage::LinkHeader))),
            "full_page" => Some((NextKind::FullPage, quote!(__rt::NextPage::FullPage))),
            other => {
                cx.error_spanned_by(
                    node,
                    format!("unknown signal {other:?}: `next_page = \"link_header\"`, `\"full_page\"`, `\"never\"`, or one of `header`, `body_url`, `body_cursor`, `total_count_header`, `total_count_body` in parentheses, e.g. `{example}`"),
                );
                None
            }
        };
    }
    let items = node.list(cx, example)?;
    let [signal] = items else {
        cx.error_spanned_by(
            node,
            format!("`next_page` holds exactly one signal, e.g. `{example}`"),
        );
        return None;
    };
    match signal.name().as_str() {
        "header" => {
            let name = signal.header(cx, "header = \"Next-Page\"")?;
            Some((
                NextKind::Header,
                quote!(__rt::NextPage::Header(__rt::ToString::to_string(#name))),
            ))
        }
        "body_url" => {
            let path = signal.dot_path(cx, "body_url = \"links.next\"")?;
            Some((
                NextKind::BodyUrl,
                quote!(__rt::NextPage::BodyUrl(__rt::ToString::to_string(#path))),
            ))
        }
        "body_cursor" => {
            let path = signal.dot_path(cx, "body_cursor = \"meta.next_cursor\"")?;
            Some((
                NextKind::BodyCursor,
                quote!(__rt::NextPage::BodyCursor(__rt::ToString::to_string(#path))),
            ))
        }
        "total_count_header" => {
            let name = signal.header(cx, "total_count_header = \"X-Total-Count\"")?;
            Some((
                NextKind::TotalCount,
                quote!(__rt::NextPage::TotalCount(__rt::CountAt::Header(__rt::ToString::to_string(#name)))),
            ))
        }
        "total_count_body" => {
            let path = signal.dot_path(cx, "total_count_body = \"count\"")?;
            Some((
                NextKind::TotalCount,
                quote!(__rt::NextPage::TotalCount(__rt::CountAt::Body(__rt::ToString::to_string(#path)))),
            ))
        }
        other => {
            cx.error_spanned_by(
                signal,
                format!("unknown signal `{other}`, expected one of `header`, `body_url`, `body_cursor`, `total_count_header`, `total_count_body` (or `next_page = \"link_header\"`, `\"full_page\"`, `\"never\"`)"),
            );
            None
        }
    }
}

/// `backend(...)`: a `RestBackend`, starting from sync-server's behaviour.
pub(crate) fn backend(cx: &Ctxt, items: &[Node]) -> Option<BackendAttr> {
    let known = [
        "idempotency_header",
        "version",
        "conditional",
        "conflict_statuses",
        "conflict_record_at",
        "already_exists",
        "updated_at",
        "tombstone",
        "server_fields",
        "server_ids",
    ];
    let opts = Options::read(cx, items, "backend", &known, &[]);
    let mut sets = Vec::new();
    let mut fields = Vec::new();

    if let Some(n) = opts.get("idempotency_header") {
        if n.is_false() {
            sets.push(quote!(backend = backend.idempotency_header(::std::option::Option::None);));
        } else if let Some(name) = n.header(
            cx,
            "idempotency_header = \"Idempotency-Key\" (or `= false`)",
        ) {
            sets.push(
                quote!(backend = backend.idempotency_header(::std::option::Option::Some(#name));),
            );
        }
    }
    let mut versions_off = false;
    if let Some(n) = opts.get("version") {
        let example = "version = \"etag\", version = \"none\" or version(field = \"rev\")";
        match &n.value {
            NodeValue::Lit(Lit::Str(s)) if s.value() == "etag" => {
                sets.push(quote!(backend = backend.version(__rt::VersionSource::ETag);));
            }
            NodeValue::Lit(Lit::Str(s)) if s.value() == "none" => {
                versions_off = true;
                sets.push(quote!(backend = backend.version(__rt::VersionSource::None);));
            }
            NodeValue::List(items) => {
                let o = Options::read(cx, items, "version", &["field"], &[]);
                if let Some(field) = o
                    .need(cx, n, "field", example)
                    .and_then(|f| f.text(cx, example))
                {
                    sets.push(quote!(backend = backend.version(__rt::VersionSource::Field(__rt::ToString::to_string(#field)));));
                }
            }
            _ => cx.error_spanned_by(n, format!("`version` is one of `{example}`")),
        }
    }
    let mut conditional_on = true;
    if let Some(n) = opts.get("conditional") {
        let example = "conditional(header = \"If-Match\", template = \"\\\"{version}\\\"\")";
        if n.is_false() {
            conditional_on = false;
            sets.push(quote!(backend = backend.conditional(::std::option::Option::None);));
        } else if let Some(items) = n.list(cx, &format!("{example} (or `conditional = false`)")) {
            let o = Options::read(cx, items, "conditional", &["header", "template"], &[]);
            let header = o
                .need(cx, n, "header", example)
                .and_then(|h| h.header(cx, example));
            let template = o
                .need(cx, n, "template", example)
                .and_then(|t| t.string(cx, example));
            if let Some(template) = &template {
                if !template.contains("{version}") {
                    cx.error_spanned_by(n, "the conditional header's template has no `{version}`");
                }
            }
            if let (Some(header), Some(template)) = (header, template) {
                sets.push(quote!(backend = backend.conditional(::std::option::Option::Some((#header, #template)));));
            }
        }
    }
    if versions_off && conditional_on {
        if let Some(n) = opts.get("version") {
            cx.error_spanned_by(
                n,
                "a conditional write needs versions: with `version = \"none\"` also write `conditional = false`",
            );
        }
    }
    if let Some(n) = opts.get("conflict_statuses") {
        if let Some(statuses) = statuses(cx, n, "conflict_statuses(409, 412)", true) {
            sets.push(quote!(backend = backend.conflict_statuses(&[#(#statuses),*]);));
        }
    }
    if let Some(n) = opts.get("conflict_record_at") {
        if n.is_false() {
            sets.push(quote!(backend = backend.conflict_record_at(::std::option::Option::None);));
        } else if let Some(path) = n.dot_path(
            cx,
            "conflict_record_at = \"current\" (or `= false`: always fetched)",
        ) {
            sets.push(
                quote!(backend = backend.conflict_record_at(::std::option::Option::Some(#path));),
            );
        }
    }
    if let Some(n) = opts.get("already_exists") {
        let example = "already_exists(statuses(400), code_at = \"code\", codes(137))";
        if let Some(items) = n.list(cx, example) {
            let o = Options::read(
                cx,
                items,
                "already_exists",
                &["statuses", "code_at", "codes"],
                &[],
            );
            let list = o
                .need(cx, n, "statuses", example)
                .and_then(|s| statuses(cx, s, "statuses(409)", false));
            let code = match (o.get("code_at"), o.get("codes")) {
                (None, None) => Some(quote!(::std::option::Option::None)),
                (Some(at), Some(codes)) => {
                    let at = at.dot_path(cx, "code_at = \"code\"");
                    let values: Option<Vec<String>> =
                        codes.list(cx, "codes(137)").and_then(|items| {
                            if items.is_empty() {
                                cx.error_spanned_by(codes, "`codes` lists at least one code");
                                return None;
                            }
                            items
                                .iter()
                                .map(|c| {
                                    if c.key.is_some() {
                                        cx.error_spanned_by(c, "`codes` lists bare literals, e.g. `codes(137, \"E_EXISTS\")`");
                                        return None;
                                    }
                                    json_literal(cx, c, "a code").map(|v| v.to_string())
                                })
                                .collect()
                        });
                    match (at, values) {
                        (Some(at), Some(values)) => Some(quote!(::std::option::Option::Some((
                            #at,
                            ::std::vec![#(__rt::json_value_literal(#values)),*],
                        )))),
                        _ => None,
                    }
                }
                (Some(one), None) | (None, Some(one)) => {
                    cx.error_spanned_by(one, "`code_at` and `codes` go together: where the error code is and the codes that mean \"exists\"");
                    None
                }
            };
            if let (Some(list), Some(code)) = (list, code) {
                sets.push(quote!(backend = backend.already_exists(&[#(#list),*], #code);));
            }
        }
    }
    if let Some(n) = opts.get("updated_at") {
        let example = "updated_at(field = \"updatedAt\", format = \"iso8601\")";
        if let Some(items) = n.list(cx, example) {
            let o = Options::read(cx, items, "updated_at", &["field", "format"], &[]);
            let field = o
                .need(cx, n, "field", example)
                .and_then(|f| f.text(cx, example));
            let format = match o.get("format") {
                Some(f) => time_format(cx, f),
                None => Some(quote!(__rt::TimeFormat::AsReceived)),
            };
            if let (Some(field), Some(format)) = (field, format) {
                if let Some(f) = o.get("field") {
                    fields.push(FieldRef {
                        wire_name: field.clone(),
                        tokens: f.to_token_stream(),
                        what: "the updated-at field",
                    });
                }
                sets.push(quote!(backend = backend.updated_at(#field, #format);));
            }
        }
    }
    if let Some(n) = opts.get("tombstone") {
        let example = "tombstone(field = \"deleted\", value = true)";
        if let Some(items) = n.list(cx, example) {
            let o = Options::read(cx, items, "tombstone", &["field", "value"], &[]);
            let field = o
                .need(cx, n, "field", example)
                .and_then(|f| f.text(cx, example));
            let value = o
                .need(cx, n, "value", example)
                .and_then(|v| json_literal(cx, v, "a tombstone's `value`"));
            if let (Some(field), Some(value)) = (field, value) {
                let value = value.to_string();
                sets.push(
                    quote!(backend = backend.tombstone(#field, __rt::json_value_literal(#value));),
                );
            }
        }
    }
    if let Some(n) = opts.get("server_fields") {
        let example = "server_fields(\"createdAt\", \"updatedAt\")";
        if let Some(items) = n.list(cx, example) {
            let mut names = Vec::new();
            for item in items {
                match (&item.key, &item.value) {
                    (None, NodeValue::Lit(Lit::Str(s))) if !s.value().is_empty() => {
                        fields.push(FieldRef {
                            wire_name: s.value(),
                            tokens: item.to_token_stream(),
                            what: "the server field",
                        });
                        names.push(s.value());
                    }
                    _ => cx.error_spanned_by(
                        item,
                        format!("`server_fields` lists wire names of fields, e.g. `{example}`"),
                    ),
                }
            }
            sets.push(quote!(backend = backend.server_fields(&[#(#names),*]);));
        }
    }
    if let Some(n) = opts.get("server_ids") {
        let example = "server_ids(id_at = \"objectId\", local_id_field = \"localId\", lookup_param = \"where\", lookup_template = r#\"{\"localId\":\"{local_id}\"}\"#)";
        if let Some(items) = n.list(cx, example) {
            let o = Options::read(
                cx,
                items,
                "server_ids",
                &["id_at", "local_id_field", "lookup_param", "lookup_template"],
                &[],
            );
            let id_at = o
                .need(cx, n, "id_at", example)
                .and_then(|v| v.dot_path(cx, example));
            let local = o
                .need(cx, n, "local_id_field", example)
                .and_then(|v| v.text(cx, example));
            let param = o
                .need(cx, n, "lookup_param", example)
                .and_then(|v| v.text(cx, example));
            let template = o
                .need(cx, n, "lookup_template", example)
                .and_then(|v| v.string(cx, example));
            if let (Some(t), Some(node)) = (&template, o.get("lookup_template")) {
                if !t.contains("{local_id}") {
                    cx.error_spanned_by(
                        node,
                        "`lookup_template` has no `{local_id}` for the local id",
                    );
                }
            }
            if let (Some(local), Some(node)) = (&local, o.get("local_id_field")) {
                fields.push(FieldRef {
                    wire_name: local.clone(),
                    tokens: node.to_token_stream(),
                    what: "the local-id field of `server_ids`",
                });
            }
            if let (Some(id_at), Some(local), Some(param), Some(template)) =
                (id_at, local, param, template)
            {
                sets.push(
                    quote!(backend = backend.server_ids(#id_at, #local, (#param, #template));),
                );
            }
        }
    }

    // With errors the derive emits them and no impl, so what was built is not used; the
    // fields it names are still checked, so that every mistake shows in one compile.
    Some(BackendAttr {
        statements: quote!(#(#sets)*),
        fields,
    })
}

/// `key(409, 412)`: HTTP 4xx statuses.
fn statuses(cx: &Ctxt, node: &Node, example: &str, may_be_empty: bool) -> Option<Vec<u16>> {
    let items = node.list(cx, example)?;
    if items.is_empty() && !may_be_empty {
        cx.error_spanned_by(
            node,
            format!(
                "`{}` lists at least one status, e.g. `{example}`",
                node.name()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    for item in items {
        match (&item.key, &item.value) {
            (None, NodeValue::Lit(Lit::Int(i))) => match i.base10_parse::<u16>() {
                Ok(s) if (400..500).contains(&s) => out.push(s),
                _ => {
                    cx.error_spanned_by(item, "a status here is a 4xx HTTP status");
                    return None;
                }
            },
            _ => {
                cx.error_spanned_by(
                    item,
                    format!("`{}` lists HTTP statuses, e.g. `{example}`", node.name()),
                );
                return None;
            }
        }
    }
    Some(out)
}
