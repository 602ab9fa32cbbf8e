"""Reading meshes and writing outputs safely."""
