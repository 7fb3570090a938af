//! SQL predicates as MongoDB query filters, with SQL's three-valued logic kept.
//!
//! A `WHERE` keeps rows whose predicate is TRUE, so each expression `e` has two
//! translations: [`Filters::when_true`] matches exactly the documents where `e` is
//! TRUE, and the "false" form those where it is FALSE (not NULL). `NOT e` is the
//! false form of `e`; this is why `a <> 5` becomes `{a: {$nin: [5, null]}}` — MongoDB's
//! `$ne` alone would also match documents where `a` is missing or null. Anything
//! without an exact translation returns `None` and stays in DataFusion.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator};
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document, Regex};

use super::decode::decimal128;

/// What a column is at the origin, as far as comparisons are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A scalar compared by value (numbers, strings, booleans, dates).
    Scalar,
    /// Text that may hold ObjectIds: equality also tries the ObjectId.
    Text,
    /// JSON or arrays: MongoDB's comparison semantics differ; never compared there.
    Opaque,
}

/// Resolves a column to its field path and kind, or `None` if it is not available.
pub trait Fields {
    /// The path and kind of `column`.
    fn field(&self, column: &datafusion::common::Column) -> Option<(String, FieldKind)>;
}

/// Translates predicates over the fields described by `F`.
pub struct Filters<'a, F: Fields>(pub &'a F);

impl<F: Fields> Filters<'_, F> {
    /// A filter matching the documents where `e` is TRUE.
    pub fn when_true(&self, e: &Expr) -> Option<Document> {
        self.tr(e, true)
    }

    /// Several ANDed predicates as one filter.
    pub fn all(&self, exprs: &[Expr]) -> Option<Document> {
        let parts = exprs
            .iter()
            .map(|e| self.when_true(e))
            .collect::<Option<Vec<_>>>()?;
        Some(match parts.len() {
            0 => Document::new(),
            1 => parts.into_iter().next().expect("one"),
            _ => doc! {"$and": parts},
        })
    }

    fn column(&self, e: &Expr) -> Option<(String, FieldKind)> {
        match e {
            Expr::Column(c) => self.0.field(c),
            // A numeric widening compares the same at the origin, which compares
            // numbers of any BSON type by value.
            Expr::Cast(c) if numeric(c.field.data_type()) => match c.expr.as_ref() {
                Expr::Column(col) => {
                    let (p, k) = self.0.field(col)?;
                    (k == FieldKind::Scalar).then_some((p, k))
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn tr(&self, e: &Expr, want: bool) -> Option<Document> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    let (l, r) = (self.tr(left, want)?, self.tr(right, want)?);
                    // TRUE(a AND b) = TRUE(a) ∧ TRUE(b); FALSE(a AND b) = FALSE(a) ∨ FALSE(b).
                    let all = (*op == Operator::And) == want;
                    Some(if all {
                        doc! {"$and": [l, r]}
                    } else {
                        doc! {"$or": [l, r]}
                    })
                }
                _ => self.comparison(left, *op, right, want),
            },
            Expr::Not(inner) => self.tr(inner, !want),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (path, kind) = self.column(inner)?;
                if kind == FieldKind::Opaque {
                    return None;
                }
                // IS [NOT] NULL is never NULL itself.
                let is_null = matches!(e, Expr::IsNull(_)) == want;
                Some(if is_null {
                    doc! {path: Bson::Null}
                } else {
                    doc! {path: {"$ne": Bson::Null}}
                })
            }
            Expr::Column(_) => {
                let (path, kind) = self.column(e)?;
                (kind == FieldKind::Scalar).then(|| doc! {path: want})
            }
            Expr::InList(list) => {
                let (path, kind) = self.column(&list.expr)?;
                let mut values = Vec::new();
                for item in &list.list {
                    let Expr::Literal(v, _) = item else {
                        return None;
                    };
                    values.extend(self.literal_eq(v, kind)?);
                }
                let positive = want != list.negated;
                Some(if positive {
                    doc! {path: {"$in": values}}
                } else {
                    values.push(Bson::Null);
                    doc! {path: {"$nin": values}}
                })
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (low.as_ref(), high.as_ref())
                else {
                    return None;
                };
                let (path, kind) = self.column(expr)?;
                if kind != FieldKind::Scalar {
                    return None;
                }
                let (lo, hi) = (literal(lo)?, literal(hi)?);
                Some(if want != *negated {
                    doc! {path: {"$gte": lo, "$lte": hi}}
                } else {
                    doc! {"$or": [{&path: {"$lt": lo}}, {&path: {"$gt": hi}}]}
                })
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                case_insensitive: false,
            }) => {
                let (path, kind) = self.column(expr)?;
                if kind == FieldKind::Opaque {
                    return None;
                }
                let Expr::Literal(ScalarValue::Utf8(Some(p)), _) = pattern.as_ref() else {
                    return None;
                };
                let regex = Bson::RegularExpression(Regex {
                    pattern: like_regex(p),
                    options: "s".into(),
                });
                Some(if want != *negated {
                    doc! {path: regex}
                } else {
                    // Strings that do not match; NULL and non-strings are not FALSE.
                    doc! {"$and": [{&path: {"$not": regex}}, {&path: {"$type": "string"}}]}
                })
            }
            _ => None,
        }
    }

    fn comparison(&self, left: &Expr, op: Operator, right: &Expr, want: bool) -> Option<Document> {
        let (col, value, op) = match (left, right) {
            (c, Expr::Literal(v, _)) => (c, v, op),
            (Expr::Literal(v, _), c) => (c, v, op.swap()?),
            _ => return None,
        };
        let (path, kind) = self.column(col)?;
        if kind == FieldKind::Opaque {
            return None;
        }
        if matches!(op, Operator::IsNotDistinctFrom | Operator::IsDistinctFrom) {
            // Never NULL itself; a missing field reads as NULL, as `null` matches it.
            let same = (op == Operator::IsNotDistinctFrom) == want;
            let mut values = if value.is_null() {
                vec![Bson::Null]
            } else {
                self.literal_eq(value, kind)?
            };
            return Some(match (same, values.len()) {
                (true, 1) => doc! {path: values.pop()},
                (true, _) => doc! {path: {"$in": values}},
                (false, _) => doc! {path: {"$nin": values}},
            });
        }
        if value.is_null() {
            return None;
        }
        let op = if want { op } else { op.negate()? };
        match op {
            Operator::Eq => {
                let mut values = self.literal_eq(value, kind)?;
                Some(if values.len() == 1 {
                    doc! {path: {"$eq": values.pop()}}
                } else {
                    doc! {path: {"$in": values}}
                })
            }
            Operator::NotEq => {
                let mut values = self.literal_eq(value, kind)?;
                values.push(Bson::Null);
                Some(doc! {path: {"$nin": values}})
            }
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                // ObjectIds and strings do not order against each other.
                if kind == FieldKind::Text {
                    if let ScalarValue::Utf8(Some(s)) = value {
                        if ObjectId::parse_str(s).is_ok() {
                            return None;
                        }
                    }
                }
                let v = literal(value)?;
                let name = match op {
                    Operator::Lt => "$lt",
                    Operator::LtEq => "$lte",
                    Operator::Gt => "$gt",
                    _ => "$gte",
                };
                Some(doc! {path: {name: v}})
            }
            _ => None,
        }
    }

    /// The BSON values equal to `v` in a column of `kind`.
    fn literal_eq(&self, v: &ScalarValue, kind: FieldKind) -> Option<Vec<Bson>> {
        let b = literal(v)?;
        if kind == FieldKind::Text {
            if let Bson::String(s) = &b {
                if let Ok(oid) = ObjectId::parse_str(s) {
                    if oid.to_hex() == *s {
                        return Some(vec![Bson::ObjectId(oid), b]);
                    }
                }
            }
        }
        Some(vec![b])
    }
}

fn numeric(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::*;
    matches!(
        t,
        Int16 | Int32 | Int64 | Float32 | Float64 | Decimal128(..)
    )
}

/// A SQL literal as the BSON value that compares the same, if there is one.
pub fn literal(v: &ScalarValue) -> Option<Bson> {
    Some(match v {
        ScalarValue::Boolean(Some(b)) => Bson::Boolean(*b),
        ScalarValue::Int8(Some(n)) => Bson::Int32(*n as i32),
        ScalarValue::Int16(Some(n)) => Bson::Int32(*n as i32),
        ScalarValue::Int32(Some(n)) => Bson::Int32(*n),
        ScalarValue::Int64(Some(n)) => Bson::Int64(*n),
        ScalarValue::UInt8(Some(n)) => Bson::Int32(*n as i32),
        ScalarValue::UInt16(Some(n)) => Bson::Int32(*n as i32),
        ScalarValue::UInt32(Some(n)) => Bson::Int64(*n as i64),
        ScalarValue::Float32(Some(f)) => Bson::Double(*f as f64),
        ScalarValue::Float64(Some(f)) => Bson::Double(*f),
        ScalarValue::Decimal128(Some(d), _, s) => Bson::Decimal128(decimal128(*d, *s)?),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Bson::String(s.clone()),
        ScalarValue::Date32(Some(d)) => {
            Bson::DateTime(DateTime::from_millis(*d as i64 * 86_400_000))
        }
        ScalarValue::TimestampSecond(Some(t), _) => {
            Bson::DateTime(DateTime::from_millis(t.checked_mul(1000)?))
        }
        ScalarValue::TimestampMillisecond(Some(t), _) => Bson::DateTime(DateTime::from_millis(*t)),
        // MongoDB dates hold milliseconds: a finer literal has no exact counterpart.
        ScalarValue::TimestampMicrosecond(Some(t), _) if t % 1000 == 0 => {
            Bson::DateTime(DateTime::from_millis(t / 1000))
        }
        ScalarValue::TimestampNanosecond(Some(t), _) if t % 1_000_000 == 0 => {
            Bson::DateTime(DateTime::from_millis(t / 1_000_000))
        }
        _ => return None,
    })
}

/// A LIKE pattern as an anchored regular expression (`%` any run, `_` one character,
/// backslash escapes the next character as PostgreSQL's default escape does).
pub fn like_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => {
                if let Some(next) = chars.next() {
                    push_escaped(&mut out, next);
                }
            }
            other => push_escaped(&mut out, other),
        }
    }
    out.push('$');
    out
}

fn push_escaped(out: &mut String, c: char) {
    if "\\^$.|?*+()[]{}".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::Column;
    use datafusion::prelude::{col, lit};

    struct Plain;
    impl Fields for Plain {
        fn field(&self, c: &Column) -> Option<(String, FieldKind)> {
            Some((
                c.name.clone(),
                if c.name == "id" {
                    FieldKind::Text
                } else {
                    FieldKind::Scalar
                },
            ))
        }
    }

    #[test]
    fn keeps_three_valued_logic() {
        let f = Filters(&Plain);
        assert_eq!(
            f.when_true(&col("a").not_eq(lit(5i32))).unwrap(),
            doc! {"a": {"$nin": [5, Bson::Null]}}
        );
        assert_eq!(
            f.when_true(&!(col("a").gt(lit(5i32)).or(col("b").is_null())))
                .unwrap(),
            doc! {"$and": [{"a": {"$lte": 5}}, {"b": {"$ne": Bson::Null}}]}
        );
        assert_eq!(
            f.when_true(&col("s").like(lit("ab_%"))).unwrap(),
            doc! {"s": Bson::RegularExpression(Regex { pattern: "^ab..*$".into(), options: "s".into() })}
        );
        let hex = "65a1b2c3d4e5f60718293a4b";
        assert_eq!(
            f.when_true(&col("id").eq(lit(hex))).unwrap(),
            doc! {"id": {"$in": [ObjectId::parse_str(hex).unwrap(), hex]}}
        );
        // A finer-than-millisecond timestamp has no exact MongoDB date.
        assert!(f
            .when_true(&col("t").gt(lit(ScalarValue::TimestampNanosecond(Some(1), None))))
            .is_none());
        assert_eq!(like_regex("a.b\\%"), "^a\\.b%$");
    }

    #[test]
    fn not_distinct_from_is_never_null() {
        use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
        let f = Filters(&Plain);
        let op = |value: ScalarValue, op| {
            Expr::BinaryExpr(BinaryExpr::new(
                Box::new(col("a")),
                op,
                Box::new(lit(value)),
            ))
        };
        let same = Operator::IsNotDistinctFrom;
        // A NULL before-image matches a null or missing field.
        assert_eq!(
            f.when_true(&op(ScalarValue::Int32(None), same)).unwrap(),
            doc! {"a": Bson::Null}
        );
        assert_eq!(
            f.when_true(&op(ScalarValue::Int32(Some(5)), same)).unwrap(),
            doc! {"a": 5}
        );
        assert_eq!(
            f.when_true(&!op(ScalarValue::Int32(Some(5)), same))
                .unwrap(),
            doc! {"a": {"$nin": [5]}}
        );
        assert_eq!(
            f.when_true(&op(ScalarValue::Int32(None), Operator::IsDistinctFrom))
                .unwrap(),
            doc! {"a": {"$nin": [Bson::Null]}}
        );
    }
}
