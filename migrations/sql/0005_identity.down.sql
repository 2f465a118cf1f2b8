DROP TABLE IF EXISTS user_data_keys;
DROP TABLE IF EXISTS user_emails;
