"""Moving and preparing disk images: transports, the controller cache, personalisation."""
