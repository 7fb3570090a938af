//! `roles:` and `users:`: grants, column rules, row filters, and the users who hold them.

use std::collections::BTreeMap;

use super::{is_identifier, known, line, Checker};
use crate::raw::{self, Str};
use crate::{ColumnRule, Grant, Result, Role, RowFilter, User};

impl Checker<'_> {
    pub(super) fn table_pattern(
        &self,
        role: &str,
        pattern: &str,
        at: Option<u64>,
    ) -> Result<String> {
        let p = pattern.trim();
        let parts: Vec<&str> = p.split('.').collect();
        let valid =
            (p == "*" || parts.len() == 2) && parts.iter().all(|s| *s == "*" || is_identifier(s));
        if !valid {
            return Err(self.err(
                at,
                format!("role {role}: {p:?} is not a table pattern"),
                "write schema.table, schema.*, or *",
            ));
        }
        Ok(p.to_string())
    }

    pub(super) fn column_names(&self, role: &str, list: &[Str]) -> Result<Vec<String>> {
        list.iter()
            .map(|c| {
                if is_identifier(&c.value) {
                    Ok(c.value.clone())
                } else {
                    Err(self.err(
                        line(c),
                        format!("role {role}: {:?} is not a column name", c.value),
                        "write the column's lower-case name",
                    ))
                }
            })
            .collect()
    }

    pub(super) fn roles(
        &self,
        raw: &indexmap::IndexMap<String, raw::RawRole>,
    ) -> Result<BTreeMap<String, Role>> {
        let mut roles = BTreeMap::new();
        for (name, role) in raw {
            let mut out = Role::default();
            for pattern in &role.allow {
                out.allow
                    .push(self.table_pattern(name, &pattern.value, line(pattern))?);
            }
            for pattern in &role.deny {
                out.deny
                    .push(self.table_pattern(name, &pattern.value, line(pattern))?);
            }
            for grant in &role.grants {
                let privileges: Vec<_> = grant.privileges.iter().map(|p| p.value.into()).collect();
                for pattern in &grant.tables {
                    out.grants.push(Grant {
                        table: self.table_pattern(name, &pattern.value, line(pattern))?,
                        privileges: privileges.clone(),
                    });
                }
            }
            for (pattern, rule) in &role.columns {
                let table = self.table_pattern(name, pattern, None)?;
                let allow = match &rule.allow {
                    Some(list) => Some(self.column_names(name, list)?),
                    None => None,
                };
                let deny = self.column_names(name, &rule.deny)?;
                let mut masks = Vec::new();
                for (column, mask) in &rule.mask {
                    if !is_identifier(column) {
                        return Err(self.err(
                            line(mask),
                            format!("role {name}: {column:?} is not a column name"),
                            "write the column's lower-case name",
                        ));
                    }
                    masks.push((column.clone(), mask.value.into()));
                }
                out.columns.push(ColumnRule {
                    table,
                    allow,
                    deny,
                    masks,
                });
            }
            for (pattern, predicate) in &role.row_filters {
                let text = self.expand(predicate, &format!("role {name}'s row filter"))?;
                if text.trim().is_empty() {
                    return Err(self.err(
                        line(predicate),
                        format!("role {name}: the row filter for {pattern} is empty"),
                        "write a SQL predicate, e.g. tenant_id = user.tenant",
                    ));
                }
                let table = self.table_pattern(name, pattern, line(predicate))?;
                let expr = crate::row_filter::parse_predicate(&text).map_err(|e| {
                    self.err(
                        line(predicate),
                        format!("role {name}: the row filter for {pattern} is not a SQL predicate: {e}"),
                        "write one SQL expression over the table's columns, e.g. tenant_id = user.tenant",
                    )
                })?;
                out.row_filters.push(RowFilter {
                    table,
                    predicate: text,
                    expr,
                    line: line(predicate),
                });
            }
            if let Some(g) = &role.guardrails {
                out.guardrails = self.guardrails(g, &format!("roles.{name}.guardrails"))?;
            }
            roles.insert(name.clone(), out);
        }
        Ok(roles)
    }

    pub(super) fn users(
        &self,
        raw: &[raw::RawUser],
        roles: &BTreeMap<String, Role>,
    ) -> Result<Vec<User>> {
        let mut users: Vec<User> = Vec::new();
        for u in raw {
            if users.iter().any(|x| x.name == u.name.value) {
                return Err(self.err(
                    line(&u.name),
                    format!("user {} is defined twice", u.name.value),
                    "keep one entry per user name",
                ));
            }
            let password = self.expand(
                &u.password,
                &format!("the password of user {}", u.name.value),
            )?;
            let mut user_roles = Vec::new();
            for r in &u.roles {
                if !roles.contains_key(&r.value) {
                    return Err(self.err(
                        line(r),
                        format!("user {} has unknown role {}", u.name.value, r.value),
                        format!("define it under roles: (known: {})", known(roles.keys())),
                    ));
                }
                user_roles.push(r.value.clone());
            }
            let mut attributes = BTreeMap::new();
            for (key, value) in &u.attributes {
                if !is_identifier(key) {
                    return Err(self.err(
                        line(value),
                        format!("user {}: attribute {key:?} is not a name", u.name.value),
                        "use lower-case letters, digits and _",
                    ));
                }
                let value = match &value.value {
                    raw::FilterValue::Text(t) => raw::FilterValue::Text(self.expand(
                        &serde_saphyr::Spanned {
                            value: t.clone(),
                            referenced: value.referenced,
                            defined: value.defined,
                        },
                        &format!("attribute {key} of user {}", u.name.value),
                    )?),
                    other => other.clone(),
                };
                attributes.insert(key.clone(), value);
            }
            // A row filter naming user.<attr> must find it on every user of the role.
            for r in &user_roles {
                for filter in &roles[r].row_filters {
                    for attr in crate::row_filter::attribute_refs(&filter.expr) {
                        if !attributes.contains_key(&attr) {
                            return Err(self.err(
                                line(&u.name),
                                format!(
                                    "user {} has role {r}, whose row filter for {} uses user.{attr}, but no attribute {attr}",
                                    u.name.value, filter.table
                                ),
                                format!("add attributes: {{ {attr}: ... }} to the user"),
                            ));
                        }
                    }
                }
            }
            let mut tokens = Vec::new();
            for t in &u.tokens {
                let token = self.expand(t, &format!("a token of user {}", u.name.value))?;
                // A short token is guessable: refuse it rather than accept it quietly.
                if token.len() < 16 {
                    return Err(self.err(
                        line(t),
                        format!(
                            "user {}: a token must be at least 16 characters",
                            u.name.value
                        ),
                        "generate one, e.g. `openssl rand -hex 24`, and pass it as ${VAR}",
                    ));
                }
                tokens.push(token);
            }
            users.push(User {
                name: u.name.value.clone(),
                password,
                roles: user_roles,
                attributes,
                tokens,
            });
        }
        Ok(users)
    }
}
