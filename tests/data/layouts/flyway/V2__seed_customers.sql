INSERT INTO customer (name) VALUES ('Acme'), ('Globex');
