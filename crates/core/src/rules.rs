//! Who may do what in a conversation. Pure functions: the store calls them inside the same
//! transaction that writes, so that a rule and the write it guards see the same state.

use natter_proto::{Conversation, ConversationKind, Message, Pos, Role, Seq, SystemEvent, UserId};

use crate::store::Membership;
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
fn may_remove(actor: Role, target: Role) -> Result<()> {
    match (actor, target) {
        (_, Role::Owner) => Err(Error::forbidden(
            "the owner cannot be removed; hand ownership over first",
        )),
        (Role::Admin, Role::Admin) => Err(Error::forbidden("an admin cannot remove another admin")),
        _ => Ok(()),
    }
}

/// The owner must hand ownership over before leaving a group that still has other members.
fn may_leave(kind: ConversationKind, role: Role, members_count: usize) -> Result<()> {
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
fn may_set_role(kind: ConversationKind, actor: Role) -> Result<()> {
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

/// `actor` leaving a conversation with `members_count` active members (them included): the
/// system message that says so, if they may.
pub fn leave(actor: UserId, membership: &Membership, members_count: usize) -> Result<SystemEvent> {
    may_leave(membership.kind, membership.role, members_count)?;
    Ok(SystemEvent::MemberLeft { user_id: actor })
}

/// `actor` (`membership`) removing `user`, whose membership is `target` (`None`: never a
/// member): the system message that says so, if they may.
pub fn removal(
    actor: UserId,
    membership: &Membership,
    user: UserId,
    target: Option<&Membership>,
) -> Result<SystemEvent> {
    may_manage_members(membership.kind, membership.role)?;
    let target = active(user, target)?;
    may_remove(membership.role, target.role)?;
    Ok(SystemEvent::MemberRemoved {
        by: actor,
        user_id: user,
    })
}

/// The role updates that making `user` (membership `target`) a `role` takes, when `actor`
/// (`membership`) asks: `user`'s, and when it hands ownership over, the old owner's (who becomes
/// an admin).
pub fn role_changes(
    actor: UserId,
    membership: &Membership,
    user: UserId,
    target: Option<&Membership>,
    role: Role,
) -> Result<Vec<(UserId, Role)>> {
    may_set_role(membership.kind, membership.role)?;
    active(user, target)?;
    if user == actor {
        return Err(Error::conflict(
            "the owner keeps their role until they make someone else owner",
        ));
    }
    let mut changes = vec![(user, role)];
    if role == Role::Owner {
        changes.push((actor, Role::Admin));
    }
    Ok(changes)
}

/// A member's delivered and read markers after they mark a conversation whose last message is
/// `last_seq`: a marker only moves forward and never past the last message, and what was read
/// was delivered.
pub fn marks_after(
    (delivered_seq, read_seq): (Seq, Seq),
    delivered: Option<Seq>,
    read: Option<Seq>,
    last_seq: Seq,
) -> (Seq, Seq) {
    let read_seq = read_seq.max(read.unwrap_or(0).min(last_seq));
    let delivered_seq = delivered_seq
        .max(delivered.unwrap_or(0).min(last_seq))
        .max(read_seq);
    (delivered_seq, read_seq)
}

/// The newest `seq` a viewer may see in a conversation whose newest is `last_seq`: all of it, or
/// for a past member (`left_seq`) up to their leaving.
pub fn visible_seq(last_seq: Seq, left_seq: Option<Seq>) -> Seq {
    left_seq.map_or(last_seq, |left| left.min(last_seq))
}

/// A conversation as one viewer sees it: their unread count and the newest message they may see
/// (`last_message`, the message at `visible_seq`). For a past member (`left`: the `seq` and
/// position of their leaving) the counters stop there too, as the messages do: how much was
/// said after they left is not theirs to know.
pub fn as_seen_by(
    conversation: &mut Conversation,
    read_seq: Seq,
    left: Option<(Seq, Pos)>,
    last_message: Option<Message>,
) {
    let visible = visible_seq(conversation.last_seq, left.map(|(seq, _)| seq));
    conversation.unread_count = Some(visible.saturating_sub(read_seq));
    if let Some((_, left_pos)) = left {
        conversation.last_seq = visible;
        conversation.last_pos = conversation.last_pos.min(left_pos);
        conversation.last_activity_at_ms = last_message
            .as_ref()
            .map_or(conversation.created_at_ms, |m| m.sent_at_ms);
    }
    conversation.last_message = last_message;
}

fn active(user: UserId, membership: Option<&Membership>) -> Result<&Membership> {
    membership
        .filter(|m| m.is_active())
        .ok_or_else(|| Error::not_found(format!("user {user} is not a member")))
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

    fn member(role: Role) -> Membership {
        Membership {
            kind: Group,
            role,
            left_seq: None,
        }
    }

    fn former(role: Role) -> Membership {
        Membership {
            left_seq: Some(3),
            ..member(role)
        }
    }

    #[test]
    fn handing_ownership_over_makes_the_old_owner_an_admin() {
        let owner = member(Owner);
        let changes = role_changes(1, &owner, 2, Some(&member(Member)), Owner).unwrap();
        assert_eq!(changes, vec![(2, Owner), (1, Admin)]);
        let changes = role_changes(1, &owner, 2, Some(&member(Member)), Admin).unwrap();
        assert_eq!(changes, vec![(2, Admin)]);
    }

    #[test]
    fn roles_change_only_for_active_members_other_than_the_owner() {
        let owner = member(Owner);
        let code = |r: Result<Vec<(UserId, Role)>>| r.map_err(|e| e.code).err();
        use natter_proto::ErrorCode;
        assert_eq!(
            code(role_changes(1, &owner, 2, None, Admin)),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(
            code(role_changes(1, &owner, 2, Some(&former(Member)), Admin)),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(
            code(role_changes(1, &owner, 1, Some(&owner), Admin)),
            Some(ErrorCode::Conflict)
        );
        assert_eq!(
            code(role_changes(
                1,
                &member(Admin),
                2,
                Some(&member(Member)),
                Admin
            )),
            Some(ErrorCode::Forbidden)
        );
    }

    #[test]
    fn a_removal_needs_the_right_and_an_active_member() {
        assert_eq!(
            removal(1, &member(Admin), 2, Some(&member(Member))).ok(),
            Some(SystemEvent::MemberRemoved { by: 1, user_id: 2 })
        );
        // Checked in this order: the right first, so that a member learns nothing of others.
        assert!(
            removal(1, &member(Member), 2, None)
                .is_err_and(|e| e.code == natter_proto::ErrorCode::Forbidden)
        );
        assert!(
            removal(1, &member(Admin), 2, Some(&former(Member)))
                .is_err_and(|e| e.code == natter_proto::ErrorCode::NotFound)
        );
        assert!(removal(1, &member(Admin), 2, Some(&member(Admin))).is_err());
        assert_eq!(
            leave(1, &member(Member), 3).ok(),
            Some(SystemEvent::MemberLeft { user_id: 1 })
        );
        assert!(leave(1, &member(Owner), 3).is_err());
    }

    #[test]
    fn a_past_member_sees_the_conversation_stop_at_their_leaving() {
        let conversation = Conversation {
            id: 1,
            kind: Group,
            title: None,
            members: Vec::new(),
            last_seq: 12,
            last_pos: 90,
            created_at_ms: 1_000,
            last_activity_at_ms: 9_000,
            last_message: None,
            unread_count: None,
        };
        let message = |seq: Seq, at: u64| Message {
            conversation_id: 1,
            seq,
            pos: seq + 30,
            sender_id: 2,
            client_msg_id: None,
            content: natter_proto::Content::Text { text: "x".into() },
            reply_to: None,
            sent_at_ms: at,
        };
        // A member: everything, unread above their marker.
        let mut seen = conversation.clone();
        as_seen_by(&mut seen, 9, None, Some(message(12, 9_000)));
        assert_eq!(
            (seen.last_seq, seen.last_pos, seen.unread_count),
            (12, 90, Some(3))
        );
        assert_eq!(seen.last_activity_at_ms, 9_000);
        // Left at seq 10, position 40: what came after is neither shown nor counted.
        let mut seen = conversation.clone();
        as_seen_by(&mut seen, 9, Some((10, 40)), Some(message(10, 5_000)));
        assert_eq!(
            (seen.last_seq, seen.last_pos, seen.unread_count),
            (10, 40, Some(1))
        );
        assert_eq!(seen.last_activity_at_ms, 5_000);
        assert_eq!(seen.last_message.map(|m| m.seq), Some(10));
        assert_eq!(visible_seq(12, Some(10)), 10);
        assert_eq!(visible_seq(12, None), 12);
    }

    #[test]
    fn markers_move_forward_only_up_to_the_last_message() {
        // Read implies delivered; nothing past the last message.
        assert_eq!(marks_after((2, 1), None, Some(5), 10), (5, 5));
        assert_eq!(marks_after((2, 1), Some(50), None, 10), (10, 1));
        // Never backwards.
        assert_eq!(marks_after((8, 6), Some(3), Some(2), 10), (8, 6));
        assert_eq!(marks_after((8, 6), None, None, 10), (8, 6));
    }
}
