//! Typed queries over a model's fields.
//!
//! Conditions are built from the typed field handles the derive generates
//! (`Todo::fields().priority.gt(3)`), so the operand type is checked at
//! compile time; the facade crate's documentation has a runnable example.
//!
//! A query is plain data ([`Filter`], [`OrderBy`]) that a store translates to
//! SQL and a remote to URL parameters, and it can be evaluated in memory with
//! [`Query::matches`] and [`Query::apply`] with the same semantics as SQL: a
//! comparison with `NULL` is never true.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use serde_json::Value;
use sync_schema::{FieldSpec, ScalarKind};

use crate::error::{Error, Result};
use crate::model::SyncModel;

/// Comparison operators of a [`Filter::Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// Text contains the operand (case-sensitive).
    Contains,
    /// Text starts with the operand (case-sensitive).
    StartsWith,
    /// Text ends with the operand (case-sensitive).
    EndsWith,
}

impl CompareOp {
    /// Short name used in URL parameters (`priority[gt]=3`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Contains => "contains",
            CompareOp::StartsWith => "starts_with",
            CompareOp::EndsWith => "ends_with",
        }
    }
}

/// The untyped form of a condition, for stores and remotes to translate.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field op value`.
    Compare {
        /// The field.
        field: &'static FieldSpec,
        /// The operator.
        op: CompareOp,
        /// The operand, as the field's JSON representation.
        value: Value,
    },
    /// `field IN (values)`; an empty list matches nothing.
    InList {
        /// The field.
        field: &'static FieldSpec,
        /// The candidates.
        values: Vec<Value>,
    },
    /// `field IS NULL`.
    IsNull(&'static FieldSpec),
    /// `field IS NOT NULL`.
    IsNotNull(&'static FieldSpec),
    /// Every sub-filter holds (an empty list is true).
    And(Vec<Filter>),
    /// Some sub-filter holds (an empty list is false).
    Or(Vec<Filter>),
}

/// A condition on model `M`, built from its typed field handles.
pub struct Condition<M> {
    filter: Filter,
    _model: PhantomData<fn() -> M>,
}

impl<M> Clone for Condition<M> {
    fn clone(&self) -> Self {
        Condition::from_filter(self.filter.clone())
    }
}

impl<M> fmt::Debug for Condition<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.filter.fmt(f)
    }
}

impl<M> PartialEq for Condition<M> {
    fn eq(&self, other: &Self) -> bool {
        self.filter == other.filter
    }
}

impl<M> Condition<M> {
    fn from_filter(filter: Filter) -> Self {
        Condition {
            filter,
            _model: PhantomData,
        }
    }

    /// Both conditions hold.
    #[must_use]
    pub fn and(self, other: Condition<M>) -> Condition<M> {
        Condition::from_filter(match self.filter {
            Filter::And(mut all) => {
                all.push(other.filter);
                Filter::And(all)
            }
            first => Filter::And(vec![first, other.filter]),
        })
    }

    /// Either condition holds.
    #[must_use]
    pub fn or(self, other: Condition<M>) -> Condition<M> {
        Condition::from_filter(match self.filter {
            Filter::Or(mut any) => {
                any.push(other.filter);
                Filter::Or(any)
            }
            first => Filter::Or(vec![first, other.filter]),
        })
    }

    /// Every condition holds (true when empty).
    pub fn all(conditions: impl IntoIterator<Item = Condition<M>>) -> Condition<M> {
        Condition::from_filter(Filter::And(
            conditions.into_iter().map(|c| c.filter).collect(),
        ))
    }

    /// Some condition holds (false when empty).
    pub fn any(conditions: impl IntoIterator<Item = Condition<M>>) -> Condition<M> {
        Condition::from_filter(Filter::Or(
            conditions.into_iter().map(|c| c.filter).collect(),
        ))
    }

    /// The untyped filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Consumes the condition, returning the untyped filter.
    pub fn into_filter(self) -> Filter {
        self.filter
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One sort key of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    /// The field.
    pub field: &'static FieldSpec,
    /// The direction.
    pub direction: Direction,
}

/// A typed sort key of model `M` (`Todo::fields().priority.desc()`).
pub struct Order<M> {
    key: OrderBy,
    _model: PhantomData<fn() -> M>,
}

impl<M> Clone for Order<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Order<M> {}

impl<M> fmt::Debug for Order<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt(f)
    }
}

impl<M> Order<M> {
    /// The untyped sort key.
    pub fn key(&self) -> OrderBy {
        self.key
    }
}

/// A typed handle to field `T` of model `M`; the derive generates one per field.
///
/// Which conditions a handle offers depends on `T`: `eq`/`ne`/`in_list` for
/// comparable types, `gt`/`ge`/`lt`/`le` for ordered ones,
/// `contains`/`starts_with`/`ends_with` for text, `is_null`/`is_not_null` for
/// `Option`s. The operand must be of the field's type (`&str` for text).
pub struct Field<M, T> {
    spec: &'static FieldSpec,
    _marker: PhantomData<fn() -> (M, T)>,
}

impl<M, T> Clone for Field<M, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M, T> Copy for Field<M, T> {}

impl<M, T> fmt::Debug for Field<M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Field").field(&self.spec.name).finish()
    }
}

impl<M, T> Field<M, T> {
    /// A handle to the field described by `spec`. Used by generated code.
    #[doc(hidden)]
    pub const fn new(spec: &'static FieldSpec) -> Self {
        Field {
            spec,
            _marker: PhantomData,
        }
    }

    /// The field's schema entry.
    pub fn spec(&self) -> &'static FieldSpec {
        self.spec
    }

    /// Ascending sort key.
    pub fn asc(self) -> Order<M> {
        self.order(Direction::Asc)
    }

    /// Descending sort key.
    pub fn desc(self) -> Order<M> {
        self.order(Direction::Desc)
    }

    fn order(self, direction: Direction) -> Order<M> {
        Order {
            key: OrderBy {
                field: self.spec,
                direction,
            },
            _model: PhantomData,
        }
    }

    fn compare(self, op: CompareOp, value: Value) -> Condition<M> {
        Condition::from_filter(Filter::Compare {
            field: self.spec,
            op,
            value,
        })
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Field types that support `eq`, `ne` and `in_list`.
pub trait Comparable: sealed::Sealed {}
/// Field types that support `gt`, `ge`, `lt` and `le`.
pub trait Ordered: Comparable {}
/// Field types that support `contains`, `starts_with` and `ends_with`.
pub trait Textual: Ordered {}

/// A value usable as the operand of a condition on a field of type `T`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be compared with a field of type `{T}`",
    label = "expected a value of the field's type `{T}`",
    note = "a condition's operand has the field's own type (`&str` for text fields)"
)]
pub trait Operand<T> {
    /// The operand as JSON, the way the field serialises.
    fn into_operand(self) -> Value;
}

macro_rules! scalar_fields {
    ($($ty:ty => $($marker:ident),*;)*) => {$(
        impl sealed::Sealed for $ty {}
        impl sealed::Sealed for Option<$ty> {}
        $(impl $marker for $ty {} impl $marker for Option<$ty> {})*
        impl Operand<$ty> for $ty {
            fn into_operand(self) -> Value { to_operand(&self) }
        }
        impl Operand<Option<$ty>> for $ty {
            fn into_operand(self) -> Value { to_operand(&self) }
        }
        impl Operand<$ty> for &$ty {
            fn into_operand(self) -> Value { to_operand(self) }
        }
        impl Operand<Option<$ty>> for &$ty {
            fn into_operand(self) -> Value { to_operand(self) }
        }
    )*};
}

scalar_fields! {
    String => Comparable, Ordered, Textual;
    bool => Comparable;
    i16 => Comparable, Ordered;
    i32 => Comparable, Ordered;
    i64 => Comparable, Ordered;
    f32 => Comparable, Ordered;
    f64 => Comparable, Ordered;
    chrono::DateTime<chrono::Utc> => Comparable, Ordered;
    chrono::NaiveDateTime => Comparable, Ordered;
    uuid::Uuid => Comparable, Ordered;
}

impl Operand<String> for &str {
    fn into_operand(self) -> Value {
        Value::String(self.to_owned())
    }
}

impl Operand<Option<String>> for &str {
    fn into_operand(self) -> Value {
        Value::String(self.to_owned())
    }
}

fn to_operand<T: serde::Serialize + ?Sized>(value: &T) -> Value {
    // Every operand type above is a plain scalar whose serialisation cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl<M, T: Comparable> Field<M, T> {
    /// `field = value`.
    pub fn eq(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Eq, value.into_operand())
    }

    /// `field <> value` (never true when the field is null).
    pub fn ne(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Ne, value.into_operand())
    }

    /// `field IN (values)`.
    pub fn in_list<V: Operand<T>>(self, values: impl IntoIterator<Item = V>) -> Condition<M> {
        Condition::from_filter(Filter::InList {
            field: self.spec,
            values: values.into_iter().map(Operand::into_operand).collect(),
        })
    }
}

impl<M, T: Ordered> Field<M, T> {
    /// `field > value`.
    pub fn gt(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Gt, value.into_operand())
    }

    /// `field >= value`.
    pub fn ge(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Ge, value.into_operand())
    }

    /// `field < value`.
    pub fn lt(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Lt, value.into_operand())
    }

    /// `field <= value`.
    pub fn le(self, value: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Le, value.into_operand())
    }
}

impl<M, T: Textual> Field<M, T> {
    /// The text contains `needle` (case-sensitive).
    pub fn contains(self, needle: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::Contains, needle.into_operand())
    }

    /// The text starts with `prefix` (case-sensitive).
    pub fn starts_with(self, prefix: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::StartsWith, prefix.into_operand())
    }

    /// The text ends with `suffix` (case-sensitive).
    pub fn ends_with(self, suffix: impl Operand<T>) -> Condition<M> {
        self.compare(CompareOp::EndsWith, suffix.into_operand())
    }
}

impl<M, T> Field<M, Option<T>> {
    /// The field is `None`.
    pub fn is_null(self) -> Condition<M> {
        Condition::from_filter(Filter::IsNull(self.spec))
    }

    /// The field is `Some`.
    pub fn is_not_null(self) -> Condition<M> {
        Condition::from_filter(Filter::IsNotNull(self.spec))
    }
}

/// A query on model `M`: a filter, sort keys, limit and offset.
pub struct Query<M> {
    filter: Option<Filter>,
    order: Vec<OrderBy>,
    limit: Option<u64>,
    offset: Option<u64>,
    _model: PhantomData<fn() -> M>,
}

impl<M> Clone for Query<M> {
    fn clone(&self) -> Self {
        Query {
            filter: self.filter.clone(),
            order: self.order.clone(),
            limit: self.limit,
            offset: self.offset,
            _model: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Query<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("filter", &self.filter)
            .field("order", &self.order)
            .field("limit", &self.limit)
            .field("offset", &self.offset)
            .finish()
    }
}

impl<M> Default for Query<M> {
    fn default() -> Self {
        Query::new()
    }
}

impl<M> Query<M> {
    /// Every record, in store order.
    pub fn new() -> Self {
        Query {
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
            _model: PhantomData,
        }
    }

    /// Adds a condition; several calls are ANDed.
    #[must_use]
    pub fn filter(mut self, condition: Condition<M>) -> Self {
        self.filter = Some(match self.filter.take() {
            None => condition.filter,
            Some(Filter::And(mut all)) => {
                all.push(condition.filter);
                Filter::And(all)
            }
            Some(existing) => Filter::And(vec![existing, condition.filter]),
        });
        self
    }

    /// Adds a sort key; earlier keys take precedence.
    #[must_use]
    pub fn order_by(mut self, order: Order<M>) -> Self {
        self.order.push(order.key);
        self
    }

    /// At most `n` records.
    #[must_use]
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skips the first `n` records.
    #[must_use]
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = Some(n);
        self
    }

    /// The filter, if any.
    pub fn filter_expr(&self) -> Option<&Filter> {
        self.filter.as_ref()
    }

    /// The sort keys.
    pub fn order(&self) -> &[OrderBy] {
        &self.order
    }

    /// The limit, if any.
    pub fn limit_value(&self) -> Option<u64> {
        self.limit
    }

    /// The offset, if any.
    pub fn offset_value(&self) -> Option<u64> {
        self.offset
    }

    /// The query as URL parameters, in this convention: `field=v` for `eq`,
    /// `field[op]=v` for the other comparisons (`ne`, `gt`, `ge`, `lt`, `le`,
    /// `contains`, `starts_with`, `ends_with`), `field[in]=a,b`,
    /// `field[null]=true|false`, `_sort=a,-b`, `_limit`, `_offset`. Keys are wire
    /// names. An OR group cannot be expressed and is an error.
    pub fn to_query_params(&self) -> Result<Vec<(String, String)>> {
        let mut params = Vec::new();
        if let Some(filter) = &self.filter {
            push_params(filter, &mut params)?;
        }
        if !self.order.is_empty() {
            let keys: Vec<String> = self
                .order
                .iter()
                .map(|o| match o.direction {
                    Direction::Asc => o.field.wire_name.to_owned(),
                    Direction::Desc => format!("-{}", o.field.wire_name),
                })
                .collect();
            params.push(("_sort".to_owned(), keys.join(",")));
        }
        if let Some(limit) = self.limit {
            params.push(("_limit".to_owned(), limit.to_string()));
        }
        if let Some(offset) = self.offset {
            params.push(("_offset".to_owned(), offset.to_string()));
        }
        Ok(params)
    }
}

fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn push_params(filter: &Filter, params: &mut Vec<(String, String)>) -> Result<()> {
    match filter {
        Filter::Compare {
            field,
            op: CompareOp::Eq,
            value,
        } => params.push((field.wire_name.to_owned(), param_text(value))),
        Filter::Compare { field, op, value } => params.push((
            format!("{}[{}]", field.wire_name, op.as_str()),
            param_text(value),
        )),
        Filter::InList { field, values } => {
            let list: Vec<String> = values.iter().map(param_text).collect();
            params.push((format!("{}[in]", field.wire_name), list.join(",")));
        }
        Filter::IsNull(field) => params.push((format!("{}[null]", field.wire_name), "true".into())),
        Filter::IsNotNull(field) => {
            params.push((format!("{}[null]", field.wire_name), "false".into()))
        }
        Filter::And(all) => {
            for f in all {
                push_params(f, params)?;
            }
        }
        Filter::Or(_) => {
            return Err(Error::UnsupportedQuery {
                target: "as URL query parameters",
                reason: "an OR group has no URL parameter form; query locally instead".into(),
            })
        }
    }
    Ok(())
}

impl<M: SyncModel> Query<M> {
    /// True if `model` passes the filter (order, limit and offset do not apply).
    ///
    /// Semantics follow SQL: any comparison with a null field is false.
    pub fn matches(&self, model: &M) -> bool {
        match &self.filter {
            None => true,
            Some(filter) => eval(filter, model),
        }
    }

    /// Orders two models by the query's sort keys (nulls first, as SQLite does).
    pub fn compare(&self, a: &M, b: &M) -> Ordering {
        for key in &self.order {
            let left = a.field_value(key.field.position).unwrap_or(Value::Null);
            let right = b.field_value(key.field.position).unwrap_or(Value::Null);
            let ord = match (left.is_null(), right.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => {
                    compare_values(key.field, &left, &right).unwrap_or(Ordering::Equal)
                }
            };
            let ord = match key.direction {
                Direction::Asc => ord,
                Direction::Desc => ord.reverse(),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Runs the whole query in memory: filter, stable sort, offset, limit.
    pub fn apply(&self, models: impl IntoIterator<Item = M>) -> Vec<M> {
        let mut out: Vec<M> = models.into_iter().filter(|m| self.matches(m)).collect();
        if !self.order.is_empty() {
            out.sort_by(|a, b| self.compare(a, b));
        }
        let offset = usize::try_from(self.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let limit = self
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        out.into_iter().skip(offset).take(limit).collect()
    }
}

fn eval<M: SyncModel>(filter: &Filter, model: &M) -> bool {
    match filter {
        Filter::And(all) => all.iter().all(|f| eval(f, model)),
        Filter::Or(any) => any.iter().any(|f| eval(f, model)),
        Filter::IsNull(field) => model
            .field_value(field.position)
            .map(|v| v.is_null())
            .unwrap_or(false),
        Filter::IsNotNull(field) => model
            .field_value(field.position)
            .map(|v| !v.is_null())
            .unwrap_or(false),
        Filter::InList { field, values } => match model.field_value(field.position) {
            Ok(v) if !v.is_null() => values
                .iter()
                .any(|c| compare_values(field, &v, c) == Some(Ordering::Equal)),
            _ => false,
        },
        Filter::Compare { field, op, value } => {
            let Ok(actual) = model.field_value(field.position) else {
                return false;
            };
            if actual.is_null() || value.is_null() {
                return false;
            }
            match op {
                CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith => {
                    match (actual.as_str(), value.as_str()) {
                        (Some(text), Some(needle)) => match op {
                            CompareOp::Contains => text.contains(needle),
                            CompareOp::StartsWith => text.starts_with(needle),
                            _ => text.ends_with(needle),
                        },
                        _ => false,
                    }
                }
                _ => match compare_values(field, &actual, value) {
                    None => false,
                    Some(ord) => match op {
                        CompareOp::Eq => ord == Ordering::Equal,
                        CompareOp::Ne => ord != Ordering::Equal,
                        CompareOp::Gt => ord == Ordering::Greater,
                        CompareOp::Ge => ord != Ordering::Less,
                        CompareOp::Lt => ord == Ordering::Less,
                        CompareOp::Le => ord != Ordering::Greater,
                        _ => false,
                    },
                },
            }
        }
    }
}

/// Compares two non-null JSON values of `field` by its type; `None` when they
/// cannot be compared.
fn compare_values(field: &FieldSpec, a: &Value, b: &Value) -> Option<Ordering> {
    match field.sql_type.scalar_kind() {
        ScalarKind::Number => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
        ScalarKind::Bool => Some(a.as_bool()?.cmp(&b.as_bool()?)),
        ScalarKind::Text => Some(a.as_str()?.cmp(b.as_str()?)),
        ScalarKind::Timestamp => {
            let (x, y) = (a.as_str()?, b.as_str()?);
            match (parse_instant(x), parse_instant(y)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => Some(x.cmp(y)),
            }
        }
        ScalarKind::Opaque => (a == b).then_some(Ordering::Equal),
    }
}

fn parse_instant(text: &str) -> Option<chrono::NaiveDateTime> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(dt.naive_utc());
    }
    text.parse::<chrono::NaiveDateTime>().ok()
}
