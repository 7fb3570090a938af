//! pgoutput messages (protocol version 1) as the stream carries them inside
//! XLogData: relations, row changes and truncates. Begin and Commit are read by
//! `pgwire-replication` itself. Values arrive in binary (`binary 'true'`), the
//! format [`crate::postgres::rows`] decodes.

use bytes::Bytes;

/// One column of a relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key).
    pub key: bool,
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
    /// Its type modifier.
    pub type_modifier: i32,
}

/// A relation message: a table's columns as of the changes that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID.
    pub id: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<RelationColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change (not sent).
    Unchanged,
    /// The value in binary (or text, without `binary`).
    Value(Bytes),
}

/// A row as pgoutput sends it.
pub type Tuple = Vec<Cell>;

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A table's description.
    Relation(Relation),
    /// A row inserted.
    Insert {
        /// The table.
        relation: u32,
        /// The row.
        new: Tuple,
    },
    /// A row updated; `old` is its former key (or whole row), when sent.
    Update {
        /// The table.
        relation: u32,
        /// The former key or row.
        old: Option<Tuple>,
        /// The row now.
        new: Tuple,
    },
    /// A row deleted.
    Delete {
        /// The table.
        relation: u32,
        /// Its key (or whole row).
        old: Tuple,
    },
    /// Tables truncated.
    Truncate {
        /// The tables.
        relations: Vec<u32>,
    },
    /// Anything else (type, origin messages): nothing to apply.
    Other,
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct Malformed(pub String);

struct Reader {
    data: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, Malformed> {
        if self.at + n > self.data.len() {
            return Err(Malformed(format!(
                "{} bytes wanted at {} of {}",
                n,
                self.at,
                self.data.len()
            )));
        }
        let out = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let rest = &self.data[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Malformed("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple, Malformed> {
        let count = self.u16()? as usize;
        let mut cells = Vec::with_capacity(count);
        for _ in 0..count {
            cells.push(match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    Cell::Value(self.take(len)?)
                }
                other => return Err(Malformed(format!("tuple cell kind {:?}", other as char))),
            });
        }
        Ok(cells)
    }
}

/// Decodes one message.
pub fn decode(data: Bytes) -> Result<Message, Malformed> {
    let mut r = Reader { data, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()? as usize;
            let mut columns = Vec::with_capacity(count);
            for _ in 0..count {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_modifier: r.u32()? as i32,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(Malformed(format!("insert marker {:?}", other as char))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut marker = r.u8()?;
            let mut old = None;
            if marker == b'K' || marker == b'O' {
                old = Some(r.tuple()?);
                marker = r.u8()?;
            }
            if marker != b'N' {
                return Err(Malformed(format!("update marker {:?}", marker as char)));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                other => return Err(Malformed(format!("delete marker {:?}", other as char))),
            }
        }
        b'T' => {
            let count = r.u32()? as usize;
            let _options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![b'b'];
        out.extend((bytes.len() as u32).to_be_bytes());
        out.extend(bytes);
        out
    }

    #[test]
    fn relations_and_changes_decode() {
        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0users\0");
        rel.push(b'd');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(23u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"name\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        let Message::Relation(r) = decode(Bytes::from(rel)).unwrap() else {
            panic!("not a relation");
        };
        assert_eq!(r.name, "users");
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 25);

        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'K');
        upd.extend(2u16.to_be_bytes());
        upd.extend(cell(&7i32.to_be_bytes()));
        upd.push(b'n');
        upd.push(b'N');
        upd.extend(2u16.to_be_bytes());
        upd.extend(cell(&8i32.to_be_bytes()));
        upd.push(b'u');
        assert_eq!(
            decode(Bytes::from(upd)).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(vec![
                    Cell::Value(Bytes::from(7i32.to_be_bytes().to_vec())),
                    Cell::Null
                ]),
                new: vec![
                    Cell::Value(Bytes::from(8i32.to_be_bytes().to_vec())),
                    Cell::Unchanged
                ],
            }
        );
        assert!(decode(Bytes::from_static(b"I\0\0\0\x01X")).is_err());
        assert!(decode(Bytes::from_static(b"D\0\0")).is_err());
    }
}
