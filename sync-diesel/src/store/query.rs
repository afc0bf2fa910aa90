//! Translation of untyped queries to SQL.

use serde_json::Value;
use sync_core::store::StoreError;
use sync_core::store::StoreQuery;
use sync_core::store::{CompareOp, Filter};
use sync_core::Direction;
use sync_schema::{FieldSpec, ModelSchema, SqlType};

use crate::ddl::{ident, Backend};
use crate::sql::Sql;
use crate::value::json_to_param;

fn param_of(
    schema: &'static ModelSchema,
    field: &FieldSpec,
    value: &Value,
    backend: Backend,
) -> Result<crate::value::Param, StoreError> {
    // Operands of an Option field are plain values; check them as non-null.
    let spec = FieldSpec {
        nullable: false,
        ..*field
    };
    json_to_param(&spec, value, backend).map_err(|reason| StoreError::InvalidValue {
        model: schema.model_type,
        field: field.wire_name.to_owned(),
        reason: format!("query operand: {reason}"),
    })
}

/// Appends the SQL of `filter` (parenthesised) to `sql`.
pub(crate) fn push_filter(
    sql: &mut Sql,
    schema: &'static ModelSchema,
    filter: &Filter,
    backend: Backend,
) -> Result<(), StoreError> {
    match filter {
        Filter::And(all) | Filter::Or(all) if all.is_empty() => {
            sql.push(if matches!(filter, Filter::And(_)) {
                "(1 = 1)"
            } else {
                "(1 = 0)"
            });
        }
        Filter::And(all) | Filter::Or(all) => {
            let joiner = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push("(");
            for (i, f) in all.iter().enumerate() {
                if i > 0 {
                    sql.push(joiner);
                }
                push_filter(sql, schema, f, backend)?;
            }
            sql.push(")");
        }
        Filter::IsNull(field) => {
            sql.push("(").push(&ident(field.column)).push(" IS NULL)");
        }
        Filter::IsNotNull(field) => {
            sql.push("(")
                .push(&ident(field.column))
                .push(" IS NOT NULL)");
        }
        Filter::InList { field, values } => {
            let params = values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| param_of(schema, field, v, backend))
                .collect::<Result<Vec<_>, _>>()?;
            if params.is_empty() {
                sql.push("(1 = 0)");
            } else {
                sql.push("(").push(&ident(field.column)).push(" IN (");
                sql.bind_list(params).push("))");
            }
        }
        Filter::Compare { value, .. } if value.is_null() => {
            // SQL: a comparison with NULL is never true.
            sql.push("(1 = 0)");
        }
        Filter::Compare { field, op, value } => {
            let col = ident(field.column);
            let param = param_of(schema, field, value, backend)?;
            let sym = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "<>",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
                CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith => {
                    if !matches!(field.sql_type, SqlType::Text) {
                        return Err(StoreError::InvalidValue {
                            model: schema.model_type,
                            field: field.wire_name.to_owned(),
                            reason: format!("`{}` needs a text field", op.as_str()),
                        });
                    }
                    push_text_match(sql, &col, *op, param, value, backend);
                    return Ok(());
                }
            };
            sql.push("(")
                .push(&col)
                .push(" ")
                .push(sym)
                .push(" ")
                .bind(param)
                .push(")");
        }
    }
    Ok(())
}

/// Case-sensitive text matching (SQLite's LIKE is not, so no LIKE).
fn push_text_match(
    sql: &mut Sql,
    col: &str,
    op: CompareOp,
    param: crate::value::Param,
    value: &Value,
    backend: Backend,
) {
    let pos = match backend {
        Backend::Sqlite => "instr",
        Backend::Postgres => "strpos",
    };
    match op {
        CompareOp::Contains => {
            sql.push("(")
                .push(pos)
                .push("(")
                .push(col)
                .push(", ")
                .bind(param)
                .push(") > 0)");
        }
        CompareOp::StartsWith => {
            // The first occurrence is at 1 exactly when the text starts with it.
            sql.push("(")
                .push(pos)
                .push("(")
                .push(col)
                .push(", ")
                .bind(param)
                .push(") = 1)");
        }
        _ => {
            if value.as_str().is_some_and(str::is_empty) {
                sql.push("(").push(col).push(" IS NOT NULL)");
                return;
            }
            match backend {
                Backend::Sqlite => sql
                    .push("(substr(")
                    .push(col)
                    .push(", -length(")
                    .bind(param.clone())
                    .push(")) = ")
                    .bind(param)
                    .push(")"),
                Backend::Postgres => sql
                    .push("(right(")
                    .push(col)
                    .push(", length(")
                    .bind(param.clone())
                    .push(")) = ")
                    .bind(param)
                    .push(")"),
            };
        }
    }
}

/// `WHERE ...` of a query: tombstones excluded unless asked for, then the filter.
pub(crate) fn push_where(
    sql: &mut Sql,
    schema: &'static ModelSchema,
    query: &StoreQuery,
    backend: Backend,
) -> Result<(), StoreError> {
    sql.push(" WHERE ");
    if query.include_deleted {
        sql.push("1 = 1");
    } else {
        sql.push("\"_deleted\" = FALSE");
    }
    if let Some(filter) = &query.filter {
        sql.push(" AND ");
        push_filter(sql, schema, filter, backend)?;
    }
    Ok(())
}

/// `ORDER BY` keys, then id; then limit and offset.
pub(crate) fn push_order_and_page(
    sql: &mut Sql,
    schema: &'static ModelSchema,
    query: &StoreQuery,
    backend: Backend,
) {
    sql.push(" ORDER BY ");
    for key in &query.order {
        sql.push(&ident(key.field.column));
        // Nulls sort first ascending, as SQLite does, on both backends.
        sql.push(match (key.direction, backend) {
            (Direction::Asc, Backend::Sqlite) => " ASC, ",
            (Direction::Desc, Backend::Sqlite) => " DESC, ",
            (Direction::Asc, Backend::Postgres) => " ASC NULLS FIRST, ",
            (Direction::Desc, Backend::Postgres) => " DESC NULLS LAST, ",
        });
    }
    sql.push(&ident(schema.id().column)).push(" ASC");
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match (query.limit, query.offset) {
        (None, None) => {}
        (limit, offset) => {
            sql.push(" LIMIT ");
            match limit {
                Some(l) => {
                    sql.bind(crate::value::Param::I64(Some(clamp(l))));
                }
                None if backend == Backend::Sqlite => {
                    sql.push("-1");
                }
                None => {
                    sql.push("ALL");
                }
            }
            if let Some(o) = offset {
                sql.push(" OFFSET ")
                    .bind(crate::value::Param::I64(Some(clamp(o))));
            }
        }
    }
}
