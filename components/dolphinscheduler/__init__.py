"""The local DolphinScheduler 3.1.1 standalone server, from Maven Central jars."""
