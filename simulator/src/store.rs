//! The live user-group store the API reads and writes (loaded from a
//! [`Dataset`]). Writes really change it: a later count reflects them.

use std::collections::{BTreeSet, HashMap};

use super::dataset::{Dataset, UserStatus};

/// One user group with its members.
#[derive(Debug, Clone)]
pub(crate) struct GroupRec {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_time: String,
    pub modified_time: String,
    /// Member user ids (active and inactive).
    pub members: BTreeSet<String>,
}

/// Groups in creation order plus the known user ids.
#[derive(Debug)]
pub(crate) struct Store {
    groups: Vec<GroupRec>,
    users: HashMap<String, UserStatus>,
    next_id: u64,
}

/// Why a write was refused (per item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// Another group already has this name (byte-exact); carries its id.
    DuplicateName(String),
    /// A source names a user that does not exist.
    UnknownUser(String),
    /// No group with that id.
    NotFound,
}

/// Fields of a create or update; `None` leaves a field unchanged on update.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Replaces the whole member list when present.
    pub members: Option<Vec<String>>,
}

impl Store {
    pub(crate) fn from_dataset(ds: &Dataset) -> Store {
        let mut groups: Vec<GroupRec> = ds
            .groups
            .iter()
            .map(|g| GroupRec {
                id: g.id.clone(),
                name: g.name.clone(),
                description: g.description.clone(),
                created_time: g.created_time.clone(),
                modified_time: g
                    .modified_time
                    .clone()
                    .unwrap_or_else(|| g.created_time.clone()),
                members: BTreeSet::new(),
            })
            .collect();
        let index: HashMap<&str, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.as_str(), i))
            .collect();
        let mut memberships = Vec::new();
        for u in &ds.users {
            for g in &u.groups {
                if let Some(&i) = index.get(g.as_str()) {
                    memberships.push((i, u.id.clone()));
                }
            }
        }
        for (i, user) in memberships {
            groups[i].members.insert(user);
        }
        let max_id = groups
            .iter()
            .filter_map(|g| g.id.parse::<u64>().ok())
            .max()
            .unwrap_or(3_652_397_000_012_454_001);
        Store {
            groups,
            users: ds.users.iter().map(|u| (u.id.clone(), u.status)).collect(),
            next_id: max_id + 1000,
        }
    }

    /// All groups in creation order.
    pub(crate) fn groups(&self) -> &[GroupRec] {
        &self.groups
    }

    pub(crate) fn get(&self, id: &str) -> Option<&GroupRec> {
        self.groups.iter().find(|g| g.id == id)
    }

    fn check(&self, patch: &GroupPatch, own_id: Option<&str>) -> Result<(), WriteError> {
        if let Some(name) = &patch.name
            && let Some(other) = self
                .groups
                .iter()
                .find(|g| &g.name == name && Some(g.id.as_str()) != own_id)
        {
            return Err(WriteError::DuplicateName(other.id.clone()));
        }
        if let Some(members) = &patch.members
            && let Some(bad) = members.iter().find(|m| !self.users.contains_key(*m))
        {
            return Err(WriteError::UnknownUser(bad.clone()));
        }
        Ok(())
    }

    /// Appends a new group; returns its id. `patch.name` must be `Some`.
    pub(crate) fn create(&mut self, patch: GroupPatch, now: &str) -> Result<String, WriteError> {
        self.check(&patch, None)?;
        let id = self.next_id.to_string();
        self.next_id += 1000;
        self.groups.push(GroupRec {
            id: id.clone(),
            name: patch.name.unwrap_or_default(),
            description: patch.description.unwrap_or_default(),
            created_time: now.to_string(),
            modified_time: now.to_string(),
            members: patch.members.unwrap_or_default().into_iter().collect(),
        });
        Ok(id)
    }

    pub(crate) fn update(
        &mut self,
        id: &str,
        patch: GroupPatch,
        now: &str,
    ) -> Result<(), WriteError> {
        self.check(&patch, Some(id))?;
        let group = self
            .groups
            .iter_mut()
            .find(|g| g.id == id)
            .ok_or(WriteError::NotFound)?;
        if let Some(name) = patch.name {
            group.name = name;
        }
        if let Some(d) = patch.description {
            group.description = d;
        }
        if let Some(m) = patch.members {
            group.members = m.into_iter().collect();
        }
        group.modified_time = now.to_string();
        Ok(())
    }

    pub(crate) fn delete(&mut self, id: &str) -> Result<(), WriteError> {
        let i = self
            .groups
            .iter()
            .position(|g| g.id == id)
            .ok_or(WriteError::NotFound)?;
        self.groups.remove(i);
        Ok(())
    }
}
