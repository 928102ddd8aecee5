//! Who may do what in a conversation. Pure functions: the store calls them inside the same
//! transaction that writes, so that a rule and the write it guards see the same state.

use natter_proto::{ConversationKind, Role};

use crate::{Error, Result};

/// Only an owner or admin adds or removes members, and only in groups.
pub fn may_manage_members(kind: ConversationKind, actor: Role) -> Result<()> {
    if kind == ConversationKind::Direct {
        return Err(Error::forbidden(
            "a direct conversation has exactly two members",
        ));
    }
    match actor {
        Role::Owner | Role::Admin => Ok(()),
        Role::Member => Err(Error::forbidden(
            "only the owner or an admin can change members",
        )),
    }
}

/// An admin cannot remove the owner or another admin; the owner can remove anyone but themselves.
pub fn may_remove(actor: Role, target: Role) -> Result<()> {
    match (actor, target) {
        (_, Role::Owner) => Err(Error::forbidden(
            "the owner cannot be removed; hand ownership over first",
        )),
        (Role::Admin, Role::Admin) => Err(Error::forbidden("an admin cannot remove another admin")),
        _ => Ok(()),
    }
}

/// The owner must hand ownership over before leaving a group that still has other members.
pub fn may_leave(kind: ConversationKind, role: Role, members_count: usize) -> Result<()> {
    if kind == ConversationKind::Direct {
        return Err(Error::forbidden("you cannot leave a direct conversation"));
    }
    if role == Role::Owner && members_count > 1 {
        return Err(Error::conflict(
            "the owner must hand ownership over before leaving",
        ));
    }
    Ok(())
}

/// Only the owner changes roles; making someone owner hands ownership over (the old owner becomes admin).
pub fn may_set_role(kind: ConversationKind, actor: Role) -> Result<()> {
    if kind == ConversationKind::Direct {
        return Err(Error::forbidden("a direct conversation has no roles"));
    }
    if actor != Role::Owner {
        return Err(Error::forbidden("only the owner can change roles"));
    }
    Ok(())
}

/// Owner or admin renames a group.
pub fn may_set_title(kind: ConversationKind, actor: Role) -> Result<()> {
    if kind == ConversationKind::Direct {
        return Err(Error::forbidden("a direct conversation has no title"));
    }
    match actor {
        Role::Owner | Role::Admin => Ok(()),
        Role::Member => Err(Error::forbidden(
            "only the owner or an admin can rename the group",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConversationKind::*;
    use Role::*;

    #[test]
    fn members_cannot_manage_members() {
        assert!(may_manage_members(Group, Owner).is_ok());
        assert!(may_manage_members(Group, Admin).is_ok());
        assert!(may_manage_members(Group, Member).is_err());
        assert!(may_manage_members(Direct, Owner).is_err());
    }

    #[test]
    fn nobody_removes_the_owner_and_admins_do_not_remove_admins() {
        assert!(may_remove(Admin, Owner).is_err());
        assert!(may_remove(Admin, Admin).is_err());
        assert!(may_remove(Owner, Admin).is_ok());
        assert!(may_remove(Admin, Member).is_ok());
    }

    #[test]
    fn owner_leaves_only_when_alone() {
        assert!(may_leave(Group, Owner, 2).is_err());
        assert!(may_leave(Group, Owner, 1).is_ok());
        assert!(may_leave(Group, Member, 5).is_ok());
        assert!(may_leave(Direct, Member, 2).is_err());
    }

    #[test]
    fn only_the_owner_changes_roles() {
        assert!(may_set_role(Group, Owner).is_ok());
        assert!(may_set_role(Group, Admin).is_err());
    }
}
