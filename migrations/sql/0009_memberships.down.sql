DROP TABLE IF EXISTS user_memberships;
