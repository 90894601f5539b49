mod workspace_tools;
