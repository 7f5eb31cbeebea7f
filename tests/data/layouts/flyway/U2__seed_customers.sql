DELETE FROM customer WHERE name = 'Globex';
