//! The conditional writes the lease table I/O performs, as data (see the
//! [module documentation](super)).

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Item, attr, b_value, n_value, pending_attributes, render, s_value, ss_value};
use super::model::Lease;
use crate::error::{Error, Result};

/// One clause of a write's condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// The attribute exists and equals the value.
    Equals {
        /// Attribute name.
        attribute: &'static str,
        /// Expected value.
        value: AttributeValue,
    },
    /// The attribute does not exist.
    NotExists {
        /// Attribute name.
        attribute: &'static str,
    },
}

impl Condition {
    fn attribute(&self) -> &'static str {
        match self {
            Condition::Equals { attribute, .. } | Condition::NotExists { attribute } => attribute,
        }
    }
}

/// One action of a write's update.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateAction {
    /// `SET attribute = value` (the legacy `PUT` action).
    Set {
        /// Attribute name.
        attribute: &'static str,
        /// New value.
        value: AttributeValue,
    },
    /// `REMOVE attribute` (the legacy `DELETE` action without a value).
    Remove {
        /// Attribute name.
        attribute: &'static str,
    },
    /// `ADD attribute value` on a number (an absent attribute counts as 0).
    Add {
        /// Attribute name.
        attribute: &'static str,
        /// The increment.
        value: u64,
    },
}

impl UpdateAction {
    fn attribute(&self) -> &'static str {
        match self {
            UpdateAction::Set { attribute, .. }
            | UpdateAction::Remove { attribute }
            | UpdateAction::Add { attribute, .. } => attribute,
        }
    }
}

/// A conditional `UpdateItem` on one lease: every condition must hold, then every action is
/// applied atomically.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseWrite {
    /// The lease key (the item's `leaseKey`).
    pub lease_key: String,
    /// Conditions, all of which must hold.
    pub conditions: Vec<Condition>,
    /// Actions, applied together.
    pub updates: Vec<UpdateAction>,
}

/// A [`LeaseWrite`] rendered as DynamoDB expressions, ready for an `UpdateItem` request.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RenderedWrite {
    /// The item key: `{"leaseKey": S(key)}`.
    pub key: Item,
    /// `ConditionExpression`, e.g. `#a0 = :v0 AND attribute_not_exists(#a1)`.
    pub condition_expression: Option<String>,
    /// `UpdateExpression`, e.g. `SET #a0 = :v1 REMOVE #a2 ADD #a3 :v2`.
    pub update_expression: String,
    /// `ExpressionAttributeNames` (`#aN` → attribute name).
    pub expression_attribute_names: HashMap<String, String>,
    /// `ExpressionAttributeValues` (`:vN` → value). DynamoDB rejects an empty map: leave the
    /// parameter unset when this is empty (no write built here produces an empty one).
    pub expression_attribute_values: HashMap<String, AttributeValue>,
}

impl LeaseWrite {
    /// Renders the write as expressions with `#aN` name and `:vN` value placeholders (names
    /// used by both the condition and the update share one placeholder).
    pub fn render(&self) -> RenderedWrite {
        let mut out = RenderedWrite {
            key: lease_key_item(&self.lease_key),
            ..RenderedWrite::default()
        };
        let mut name_of: HashMap<&'static str, String> = HashMap::new();
        let mut name = |attribute: &'static str, names: &mut HashMap<String, String>| {
            name_of
                .entry(attribute)
                .or_insert_with(|| {
                    let placeholder = format!("#a{}", names.len());
                    names.insert(placeholder.clone(), attribute.to_owned());
                    placeholder
                })
                .clone()
        };
        let value = |v: AttributeValue, values: &mut HashMap<String, AttributeValue>| {
            let placeholder = format!(":v{}", values.len());
            values.insert(placeholder.clone(), v);
            placeholder
        };

        let mut clauses = Vec::with_capacity(self.conditions.len());
        for condition in &self.conditions {
            let n = name(condition.attribute(), &mut out.expression_attribute_names);
            clauses.push(match condition {
                Condition::Equals { value: v, .. } => {
                    let v = value(v.clone(), &mut out.expression_attribute_values);
                    format!("{n} = {v}")
                }
                Condition::NotExists { .. } => format!("attribute_not_exists({n})"),
            });
        }
        if !clauses.is_empty() {
            out.condition_expression = Some(clauses.join(" AND "));
        }

        let (mut sets, mut removes, mut adds) = (Vec::new(), Vec::new(), Vec::new());
        for update in &self.updates {
            let n = name(update.attribute(), &mut out.expression_attribute_names);
            match update {
                UpdateAction::Set { value: v, .. } => {
                    let v = value(v.clone(), &mut out.expression_attribute_values);
                    sets.push(format!("{n} = {v}"));
                }
                UpdateAction::Remove { .. } => removes.push(n),
                UpdateAction::Add { value: by, .. } => {
                    let v = value(n_value(*by), &mut out.expression_attribute_values);
                    adds.push(format!("{n} {v}"));
                }
            }
        }
        let mut expr = String::new();
        for (keyword, parts) in [("SET", sets), ("REMOVE", removes), ("ADD", adds)] {
            if !parts.is_empty() {
                if !expr.is_empty() {
                    expr.push(' ');
                }
                let _ = write!(expr, "{keyword} {}", parts.join(", "));
            }
        }
        out.update_expression = expr;
        out
    }

    /// Whether the conditions hold against `item` (`None`: the item does not exist, which
    /// fails every condition except `NotExists`).
    pub fn conditions_hold(&self, item: Option<&Item>) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::Equals { attribute, value } => {
                item.and_then(|i| i.get(*attribute)) == Some(value)
            }
            Condition::NotExists { attribute } => item.is_none_or(|i| !i.contains_key(*attribute)),
        })
    }

    /// Applies the actions to `item` as DynamoDB would (without checking conditions).
    ///
    /// # Errors
    ///
    /// [`Error::AttributeType`] / [`Error::AttributeValue`] when an `Add` targets an
    /// attribute that is not an integer `N`.
    pub fn apply_to(&self, item: &mut Item) -> Result<()> {
        item.entry(attr::LEASE_KEY.to_owned())
            .or_insert_with(|| AttributeValue::S(self.lease_key.clone()));
        for update in &self.updates {
            match update {
                UpdateAction::Set { attribute, value } => {
                    item.insert((*attribute).to_owned(), value.clone());
                }
                UpdateAction::Remove { attribute } => {
                    item.remove(*attribute);
                }
                UpdateAction::Add { attribute, value } => {
                    let current = match item.get(*attribute) {
                        None => 0,
                        Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| {
                            Error::attribute_value(attribute, n, "ADD needs an integer")
                        })?,
                        Some(other) => {
                            return Err(Error::AttributeType {
                                attribute,
                                expected: "N",
                                found: super::item::type_name(other),
                                value: render(other),
                            });
                        }
                    };
                    item.insert((*attribute).to_owned(), n_value(current + value));
                }
            }
        }
        Ok(())
    }
}

impl LeaseWrite {
    /// Whether `item` (the lease as the table holds it after this write's condition failed)
    /// shows this very write applied: every `SET` value in place, every `REMOVE`d attribute
    /// absent, and every `ADD`ed counter one step past the value the condition expected. That
    /// is the signature of a write whose answer was lost after it landed, retried (by the SDK
    /// or by us) and refused by its own condition: the Java KCL re-reads the lease and
    /// recovers the same way. A write with an `ADD` but no condition on that attribute can
    /// not be told apart and is never taken as applied.
    pub fn is_applied_in(&self, item: &Item) -> bool {
        // What the write conditioned on and does not change must still be as expected (a
        // renewal changes only the counter: a take by another worker moves it too, and
        // changes the owner the renewal expected).
        let untouched = |attribute: &str| self.updates.iter().all(|u| u.attribute() != attribute);
        let unchanged = self.conditions.iter().all(|condition| match condition {
            Condition::Equals { attribute, value } if untouched(attribute) => item
                .get(*attribute)
                .is_some_and(|held| same_value(held, value)),
            Condition::NotExists { attribute } if untouched(attribute) => {
                !item.contains_key(*attribute)
            }
            _ => true,
        });
        unchanged && self.updates.iter().all(|update| match update {
            UpdateAction::Set { attribute, value } => item
                .get(*attribute)
                .is_some_and(|held| same_value(held, value)),
            UpdateAction::Remove { attribute } => !item.contains_key(*attribute),
            UpdateAction::Add { attribute, value } => {
                let expected = self.conditions.iter().find_map(|c| match c {
                    Condition::Equals {
                        attribute: a,
                        value: AttributeValue::N(n),
                    } if a == attribute => n.parse::<u64>().ok(),
                    _ => None,
                });
                let held = match item.get(*attribute) {
                    Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
                    _ => None,
                };
                matches!((expected, held), (Some(e), Some(h)) if e.checked_add(*value) == Some(h))
            }
        })
    }
}

/// Equal as DynamoDB compares values: numbers by value, string sets as sets.
fn same_value(held: &AttributeValue, wanted: &AttributeValue) -> bool {
    match (held, wanted) {
        (AttributeValue::N(a), AttributeValue::N(b)) => {
            a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
        }
        (AttributeValue::Ss(a), AttributeValue::Ss(b)) => {
            let mut a = a.clone();
            let mut b = b.clone();
            a.sort();
            b.sort();
            a == b
        }
        _ => held == wanted,
    }
}

/// The key of a lease item: `{"leaseKey": S(lease_key)}`.
pub fn lease_key_item(lease_key: &str) -> Item {
    HashMap::from([(
        attr::LEASE_KEY.to_owned(),
        AttributeValue::S(lease_key.to_owned()),
    )])
}

/// The condition of a lease-creating `PutItem`: `attribute_not_exists(leaseKey)`, as the
/// Java `createLeaseIfNotExists`. Names are `#k` → `leaseKey`.
pub const CREATE_CONDITION_EXPRESSION: &str = "attribute_not_exists(#k)";

fn counter_equals(counter: u64) -> Condition {
    Condition::Equals {
        attribute: attr::LEASE_COUNTER,
        value: n_value(counter),
    }
}

fn equals_or_absent(attribute: &'static str, value: Option<&str>) -> Result<Condition> {
    Ok(match value {
        Some(v) => Condition::Equals {
            attribute,
            value: s_value(attribute, v)?,
        },
        None => Condition::NotExists { attribute },
    })
}

fn set(attribute: &'static str, value: AttributeValue) -> UpdateAction {
    UpdateAction::Set { attribute, value }
}

fn remove(attribute: &'static str) -> UpdateAction {
    UpdateAction::Remove { attribute }
}

impl Lease {
    /// The conditions Java puts on counter-fenced writes: `leaseCounter` equals the value we
    /// last read or wrote.
    pub fn counter_expectation(&self) -> Vec<Condition> {
        vec![counter_equals(self.lease_counter)]
    }

    /// The conditions Java puts on owner-fenced writes (evict, assign): `leaseOwner` and
    /// `checkpointOwner` as we last read them (absent if absent), and the lease still exists.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`] if an owner is an empty string.
    pub fn owner_expectation(&self) -> Result<Vec<Condition>> {
        Ok(vec![
            equals_or_absent(attr::LEASE_OWNER, self.lease_owner.as_deref())?,
            equals_or_absent(attr::CHECKPOINT_OWNER, self.checkpoint_owner.as_deref())?,
            Condition::Equals {
                attribute: attr::LEASE_KEY,
                value: s_value(attr::LEASE_KEY, &self.lease_key)?,
            },
        ])
    }

    /// Renewal (heartbeat) by the holder: bump the counter if nobody else touched the lease.
    ///
    /// Like Java 3.x, the write also requires `checkpointOwner` to be absent unless this
    /// lease already records a hand-off, so a renewal fails (and the caller re-reads) when a
    /// KCL 3.x leader has started a graceful hand-off. `throughputKBps` is left untouched:
    /// this crate does not measure it, and re-writing the figure read at the take would show
    /// a Java 3.x leader's load balancing a stale load as current (Java 3.x writes the
    /// throughput it measured since the last renewal).
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for fields that can be invalid.
    pub fn renew_write(&self) -> Result<LeaseWrite> {
        let mut conditions = self.counter_expectation();
        if self.checkpoint_owner.is_none() {
            conditions.push(Condition::NotExists {
                attribute: attr::CHECKPOINT_OWNER,
            });
        }
        Ok(LeaseWrite {
            lease_key: self.lease_key.clone(),
            conditions,
            updates: vec![set(attr::LEASE_COUNTER, n_value(self.lease_counter + 1))],
        })
    }

    /// Taking (or stealing) the lease for `new_owner`, fenced on the counter last seen.
    ///
    /// Mirrors the Java `takeLease`: sets the owner, bumps the counter, clears any
    /// `checkpointOwner` (a fresh assignment), and adds 1 to `ownerSwitchesSinceCheckpoint`
    /// when the owner changes or the new owner was the hand-off's checkpoint owner.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`] if `new_owner` is empty.
    pub fn take_write(&self, new_owner: &str) -> Result<LeaseWrite> {
        let mut updates = vec![
            set(attr::LEASE_COUNTER, n_value(self.lease_counter + 1)),
            set(attr::LEASE_OWNER, s_value(attr::LEASE_OWNER, new_owner)?),
            remove(attr::CHECKPOINT_OWNER),
        ];
        let owner_changes = self
            .lease_owner
            .as_deref()
            .is_some_and(|old| old != new_owner);
        let reclaims_handoff = self.checkpoint_owner.as_deref() == Some(new_owner);
        if owner_changes || reclaims_handoff {
            updates.push(UpdateAction::Add {
                attribute: attr::OWNER_SWITCHES_SINCE_CHECKPOINT,
                value: 1,
            });
        }
        Ok(LeaseWrite {
            lease_key: self.lease_key.clone(),
            conditions: self.counter_expectation(),
            updates,
        })
    }

    /// Starting a graceful hand-off of this lease to `new_owner`, as the Java KCL 3.x
    /// `initiateGracefulLeaseHandoff`: `leaseOwner := new_owner` and
    /// `checkpointOwner := ` the current owner, on condition that the owner is still the one
    /// last read, no hand-off is under way and the lease exists.
    ///
    /// The counter is not bumped (as in Java), so the current owner's next renewal fails only
    /// on its `checkpointOwner` condition; it then re-reads the lease, finishes and
    /// checkpoints, and releases it with [`evict_write`](Self::evict_write), which removes
    /// `checkpointOwner` and leaves `new_owner` holding the lease.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`](crate::Error::AttributeValue) if the lease has no owner (there
    /// is nobody to hand it off) or an owner is empty.
    pub fn handoff_write(&self, new_owner: &str) -> Result<LeaseWrite> {
        let Some(current) = self.lease_owner.as_deref() else {
            return Err(crate::Error::attribute_value(
                attr::LEASE_OWNER,
                "",
                "a hand-off needs a current owner",
            ));
        };
        let mut conditions = vec![equals_or_absent(attr::LEASE_OWNER, Some(current))?];
        conditions.push(Condition::NotExists {
            attribute: attr::CHECKPOINT_OWNER,
        });
        conditions.push(Condition::Equals {
            attribute: attr::LEASE_KEY,
            value: s_value(attr::LEASE_KEY, &self.lease_key)?,
        });
        Ok(LeaseWrite {
            lease_key: self.lease_key.clone(),
            conditions,
            updates: vec![
                set(attr::LEASE_OWNER, s_value(attr::LEASE_OWNER, new_owner)?),
                set(
                    attr::CHECKPOINT_OWNER,
                    s_value(attr::CHECKPOINT_OWNER, current)?,
                ),
            ],
        })
    }

    /// Releasing the lease (the holder giving it up, e.g. on shutdown), fenced on the owners
    /// last seen, as the Java `evictLease`: removes `leaseOwner` (unless a hand-off is under
    /// way, in which case only `checkpointOwner` goes so the next owner can start), removes
    /// `checkpointOwner`, and adds 1 to the counter.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`] if an owner is an empty string.
    pub fn evict_write(&self) -> Result<LeaseWrite> {
        let mut updates = Vec::with_capacity(3);
        if self.checkpoint_owner.is_none() {
            updates.push(remove(attr::LEASE_OWNER));
        }
        updates.push(remove(attr::CHECKPOINT_OWNER));
        updates.push(UpdateAction::Add {
            attribute: attr::LEASE_COUNTER,
            value: 1,
        });
        Ok(LeaseWrite {
            lease_key: self.lease_key.clone(),
            conditions: self.owner_expectation()?,
            updates,
        })
    }

    /// Writing the lease's application state (checkpoint, prepared checkpoint, child shards,
    /// hash range) by its holder, fenced on the counter, as the Java `updateLease`. Call
    /// [`set_checkpoint`](Self::set_checkpoint) or
    /// [`set_pending_checkpoint`](Self::set_pending_checkpoint) first.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`] for an empty child shard id or multi-stream shard id.
    pub fn update_write(&self) -> Result<LeaseWrite> {
        let mut updates = vec![set(attr::LEASE_COUNTER, n_value(self.lease_counter + 1))];
        updates.extend(
            self.checkpoint_attributes()
                .into_iter()
                .map(|(a, v)| set(a, v)),
        );
        updates.push(set(
            attr::OWNER_SWITCHES_SINCE_CHECKPOINT,
            n_value(self.owner_switches_since_checkpoint),
        ));
        match &self.pending_checkpoint {
            Some(pending) => updates.extend(
                pending_attributes(pending)
                    .into_iter()
                    .map(|(a, v)| set(a, v)),
            ),
            None => updates.extend([
                remove(attr::PENDING_CHECKPOINT),
                remove(attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ]),
        }
        updates.push(match &self.pending_checkpoint_state {
            Some(state) => set(attr::PENDING_CHECKPOINT_STATE, b_value(state)),
            None => remove(attr::PENDING_CHECKPOINT_STATE),
        });
        if !self.child_shard_ids.is_empty() {
            updates.push(set(
                attr::CHILD_SHARD_IDS,
                ss_value(attr::CHILD_SHARD_IDS, &self.child_shard_ids)?,
            ));
        }
        updates.extend(
            self.hash_key_attributes()
                .into_iter()
                .map(|(a, v)| set(a, v)),
        );
        updates.extend(
            self.multi_stream_attributes()?
                .into_iter()
                .map(|(a, v)| set(a, v)),
        );
        Ok(LeaseWrite {
            lease_key: self.lease_key.clone(),
            conditions: self.counter_expectation(),
            updates,
        })
    }

    /// This lease as it will be once `write` succeeds (applies the write's actions to
    /// [`to_item`](Self::to_item) and reads the result back).
    ///
    /// # Errors
    ///
    /// As [`to_item`](Self::to_item), [`LeaseWrite::apply_to`] and [`from_item`](Self::from_item).
    pub fn after(&self, write: &LeaseWrite) -> Result<Lease> {
        let mut item = self.to_item()?;
        write.apply_to(&mut item)?;
        Lease::from_item(&item)
    }
}
