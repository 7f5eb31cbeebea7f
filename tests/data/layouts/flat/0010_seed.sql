INSERT INTO items VALUES (1, 'one', 1.50);
